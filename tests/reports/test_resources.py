"""The report's Resources section: drawn from resources.parquet, absent for runs without it."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reports.history import load_run
from reports.model import build_report
from reports.render import write_report
from tests.reports.conftest import StoreSpec

# What run.json `resources` holds after a run (as workloads.resources.ResourceSampler.summary writes it).
RESOURCES_SUMMARY = {
    "interval_s": 1.0,
    "samples": 6,
    "sampler_cpu_s": 0.02,
    "sampler_cpu_percent": 0.4,
    "load": {"processes": 2, "cpu_percent_mean": 80.0, "cpu_percent_max": 95.0, "rss_bytes_max": 150 * 2**20},
    "server": {
        "process": "postgres 812",
        "cpu_percent_mean": 40.0,
        "cpu_percent_max": 55.0,
        "rss_bytes_max": 300 * 2**20,
        "tree_processes_max": 9,
    },
    "store": {
        "metrics": ["numbackends", "xact_commit"],
        "window": {
            "xact_commit": {"kind": "counter", "delta": 12345.0, "per_s": 4115.0},
            "numbackends": {"kind": "gauge", "min": 3.0, "mean": 3.5, "max": 4.0},
        },
    },
}


def resources_frame(run_id: str) -> pd.DataFrame:
    start = pd.Timestamp("2026-12-04T20:15:00", tz="UTC")
    rows = []
    for tick in range(6):
        time = start + pd.Timedelta(seconds=tick)
        common = {
            "run_id": run_id,
            "store": "postgres",
            "time": time,
            "offset_s": float(tick),
            "in_window": 1 <= tick <= 4,
        }
        for source, process, pid, cpu, rss in (
            ("load", "master 100", 100, 20.0 + tick, 90e6),
            ("load", "worker 101", 101, 70.0 + tick, 60e6),
            ("server", "postgres 812", 812, 40.0, 300e6),
        ):
            if tick:  # no CPU on the first tick, as the sampler writes it
                rows.append(
                    {
                        **common,
                        "source": source,
                        "process": process,
                        "pid": pid,
                        "metric": "cpu_percent",
                        "value": cpu,
                    }
                )
            rows.append(
                {
                    **common,
                    "source": source,
                    "process": process,
                    "pid": pid,
                    "metric": "rss_bytes",
                    "value": rss,
                }
            )
        rows.append(
            {
                **common,
                "source": "store",
                "process": "",
                "pid": None,
                "metric": "xact_commit",
                "value": 1000.0 * tick,
            }
        )
    frame = pd.DataFrame(rows)
    frame["pid"] = frame["pid"].astype("Int64")
    return frame


def test_the_report_draws_resources_when_sampled_and_renders_without_them(tmp_path, make_run):
    run_id = make_run(tmp_path, stores=[StoreSpec("postgres", extra={"resources": RESOURCES_SUMMARY})])
    folder = tmp_path / "runs" / f"run_id={run_id}" / "store=postgres"
    pq.write_table(
        pa.Table.from_pandas(resources_frame(run_id), preserve_index=False), folder / "resources.parquet"
    )

    report = build_report(load_run(tmp_path, run_id))
    [resources] = report.resources
    assert sorted(resources.cpu) == [
        "load: master 100",
        "load: worker 101",
        "server: postgres 812 (whole process tree)",
    ]
    assert resources.cpu["load: worker 101"].values == [71.0, 72.0, 73.0, 74.0, 75.0]
    assert resources.memory_mib["server: postgres 812 (whole process tree)"].values[0] == 300e6 / 2**20
    assert resources.window_s == (1.0, 4.0)

    html = write_report(tmp_path, run_id).read_text()
    section = html[html.index('id="resources"') : html.index('id="validation"')]
    assert (
        '<svg role="img" aria-label="CPU and memory over time of postgres&#39;s load processes and server"'
        in section
    )
    for text in (
        "load: master 100",
        "load: worker 101",
        "server: postgres 812 (whole process tree)",
        "load processes: CPU mean 80%, max 95% of one core, RSS max 150 MiB, 2 processes",
        "server: CPU mean 40%, max 55% of one core, RSS max 300 MiB, up to 9 processes in its tree",
        "the sampler itself: 0.40% of one core",
        '<td class="mono">xact_commit</td><td>counter</td><td class="num">12,345</td>'
        '<td class="num">4,115</td>',
    ):
        assert text in section, text

    # An older run (no resources.parquet) renders as before, without the section.
    (folder / "resources.parquet").unlink()
    html = write_report(tmp_path, run_id).read_text()
    assert 'id="resources"' not in html
    assert 'id="timeseries"' in html and "<svg" in html
