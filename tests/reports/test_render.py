"""The HTML reports: written atomically, complete, escaped, and self-contained."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

import pytest

from reports.history import list_runs
from reports.render import render_index, write_index, write_report
from tests.reports.conftest import StoreSpec
from workloads.errors import OptiStackError

EXTERNAL_REFERENCE = re.compile(
    r"""(?:\b(?:src|href|xlink:href|action|poster|srcset)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//)"""
    r"""|url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//|@import""",
    re.IGNORECASE,
)
FAILED = StoreSpec("redis", status="failed", error="connect: connection refused")


def test_report_and_index_are_written(tmp_path, make_run):
    run_id = make_run(tmp_path)

    path = write_report(tmp_path, run_id)

    assert path == tmp_path / "reports" / f"{run_id}.html"
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert f"Run {run_id}" in html
    index = (tmp_path / "reports" / "index.html").read_text()
    assert f'href="{run_id}.html"' in index
    # Written aside and renamed: nothing temporary is left behind.
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [f"{run_id}.html", "index.html"]
    assert list_runs(tmp_path)[0]["report"] == f"reports/{run_id}.html"


def test_the_report_names_every_store_and_why_the_failed_one_failed(realistic_report):
    html = realistic_report.read_text()

    for store in ("postgres", "redis", "mysql"):
        assert f"</span>{store}</span>" in html  # the store label in the tables
    failed = html[html.index('id="failed-stores"') : html.index('id="parameters"')]
    assert "1 of 3 stores failed" in failed
    assert (
        "mysql" in failed and "cannot reach mysql at 127.0.0.1:3306: [Errno 111] Connection refused" in failed
    )
    assert "postgres" not in failed
    assert "No measurements: connect: cannot reach mysql" in html  # its summary row says so too
    # Parameters, versions and measured figures are there.
    for text in ("read 50% · update 50%", "zipfian (constant 0.99)", "10,000 (10 fields \u00d7 100 B)",
                 "PostgreSQL 15.19", "Redis 7.2.5", "psycopg 3.3.9", "bench-01 · 2 CPUs",
                 "Throughput (ops/s)", "p99.9 (µs)", "TimeoutError", "load processes&#39; CPU peak: 71%, 68%"):  # fmt: skip
        assert text in html, text
    # Validation: postgres passed (its checks folded away), redis was held to a clean run
    # and failed error_ratio, shown open with the failing rows; mysql was never validated.
    validation = html[html.index('id="validation"') :]
    postgres = validation[
        validation.index("</span>postgres</span>") : validation.index("</span>redis</span>")
    ]
    assert "9 of 9 checks passed — show them" in postgres and '<details class="checks">' in postgres
    redis = validation[validation.index("</span>redis</span>") :]
    redis = redis[: redis.index("</details>")]
    assert '<details class="checks" open>' in redis and "8 of 9 checks passed" in redis
    error_ratio = redis[redis.index("error_ratio") : redis.index("</tr>", redis.index("error_ratio"))]
    assert '<span class="badge fail">fail</span>' in error_ratio
    assert "READ error ratio 1.3e-05 (3 errors)" in error_ratio
    assert "errors / (ops + errors) at most 0, overall (ALL) and per operation" in error_ratio
    assert "not validated (the store failed before producing results)" in validation
    assert '<span class="badge none">skipped</span>' in validation
    # The slowest operations, slowest first, with their keys.
    slowest = html[html.index('id="slowest"') : html.index('id="validation"')]
    assert slowest.count("<tr>") == 1 + 10  # header + 5 per measured store
    assert re.search(r'class="mono">user\d{10}</td>', slowest)


def test_charts_are_inline_svg_with_unique_ids(realistic_report):
    html = realistic_report.read_text()

    assert html.count("<svg ") == 3
    for chart in ("throughput", "latency", "timeseries"):
        section = html[html.index(f'id="{chart}"') :]
        assert section.index("<svg ") < section.index("</section>"), chart
    assert "could not be drawn" not in html
    ids = Counter(re.findall(r'\bid="([^"]+)"', html))
    assert [i for i, n in ids.items() if n > 1] == []
    # Every internal reference points at an element of the page.
    for ref in re.findall(r'href="#([^"]+)"|url\(#([^)]+)\)', html):
        assert (ref[0] or ref[1]) in ids


def test_strings_from_stores_and_users_are_escaped(tmp_path, make_run):
    evil = "<script>alert('version')</script>"
    run_id = make_run(
        tmp_path,
        stores=[
            StoreSpec("postgres", server_version=evil),
            StoreSpec("mysql", status="failed", error="<img src=x onerror=alert(1)> refused"),
        ],
        label="<script>alert('label')</script> & friends",
    )
    html = write_report(tmp_path, run_id).read_text()
    index = (tmp_path / "reports" / "index.html").read_text()

    assert "<script" not in html.lower() and "<script" not in index.lower()
    assert "PostgreSQL &lt;script&gt;alert(&#39;version&#39;)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(&#39;label&#39;)&lt;/script&gt; &amp; friends" in html
    assert "&lt;script&gt;alert(&#39;label&#39;)&lt;/script&gt;" in index
    assert "&lt;img src=x onerror=alert(1)&gt; refused" in html
    assert "<img" not in html


def test_the_report_references_nothing_outside_itself(realistic_report):
    html = realistic_report.read_text()
    index = (realistic_report.parent / "index.html").read_text()

    for page in (html, index):
        assert EXTERNAL_REFERENCE.findall(page) == []
        assert "<script" not in page.lower()
        assert "<link" not in page.lower()
        assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    # The page forbids fetching anything even if something slipped in.
    assert "Content-Security-Policy\" content=\"default-src 'none'" in html
    # And the check itself catches the references it is meant to catch.
    for bad in ('<script src="https://cdn.example/x.js">', "<link href='//fonts.example/css'>",
                '<img src = "http://x/y.png">', "<style>@import 'x.css'</style>", "url(https://x/f.woff)"):  # fmt: skip
        assert EXTERNAL_REFERENCE.findall(bad), bad


def test_a_password_in_a_url_never_reaches_the_report(tmp_path, make_run):
    store = StoreSpec(
        "postgres",
        extra={
            "url": "postgresql://bench:s3cret@db.internal:5432/postgres",
            "command": "optistack run --store postgres --url postgres=postgresql://bench:s3cret@db.internal/pg",
        },
    )
    html = write_report(tmp_path, make_run(tmp_path, stores=[store])).read_text()
    assert "s3cret" not in html
    assert "postgresql://bench:***@db.internal:5432/postgres" in html


def test_a_run_where_every_store_failed_still_renders(tmp_path, make_run):
    run_id = make_run(
        tmp_path, stores=[StoreSpec("redis", status="failed", error="provision: permission denied")]
    )
    html = write_report(tmp_path, run_id).read_text()
    assert "1 of 1 store failed" in html
    assert "provision: permission denied" in html
    assert "No store produced measurements." in html
    assert "<svg" not in html


def test_target_rate_runs_show_latency_from_the_intended_start(tmp_path, make_run):
    run_id = make_run(tmp_path, stores=[StoreSpec("postgres")])
    summary = tmp_path / f"runs/run_id={run_id}/store=postgres/summary.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(summary)
    for name in ("intended_latency_p50_us", "intended_latency_p99_us"):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pa.array([12345.0] * len(table)))
    pq.write_table(table, summary)

    html = write_report(tmp_path, run_id).read_text()
    assert "Response time from the intended start (µs)" in html
    assert "12,345" in html


def test_the_index_lists_every_report_newest_first(tmp_path, make_run):
    for run_id, started in [("r-old", "2026-12-01T20:00:00+00:00"), ("r-new", "2026-12-03T20:00:00+00:00"),
                            ("r-mid", "2026-12-02T20:00:00+00:00")]:  # fmt: skip
        # Failed stores only: nothing to draw, so the index test stays fast.
        make_run(tmp_path, run_id, stores=[FAILED], started_at=datetime.fromisoformat(started))
        write_report(tmp_path, run_id, update_index=False)
    make_run(tmp_path, "r-unreported", stores=[FAILED])

    index = write_index(tmp_path).read_text()

    links = re.findall(r'<a href="([^"]+)">', index)
    assert links == ["r-new.html", "r-mid.html", "r-old.html"]
    assert "3 reports, newest first" in index
    assert "2026-12-03 20:00:00 UTC" in index


def test_the_index_of_an_empty_results_root_says_how_to_make_a_report(tmp_path):
    assert "No reports yet" in render_index(tmp_path)


def test_without_a_run_id_the_newest_run_is_reported(tmp_path, make_run):
    make_run(tmp_path, "r1", stores=[FAILED], started_at=datetime.fromisoformat("2026-12-01T20:00:00+00:00"))
    make_run(tmp_path, "r2", stores=[FAILED], started_at=datetime.fromisoformat("2026-12-02T20:00:00+00:00"))
    assert write_report(tmp_path).name == "r2.html"


def test_reporting_without_runs_or_an_unknown_run_is_a_user_error(tmp_path, make_run):
    with pytest.raises(OptiStackError, match="no runs under"):
        write_report(tmp_path)
    make_run(tmp_path, "r1", stores=[FAILED])
    with pytest.raises(OptiStackError, match="no run 'r9'"):
        write_report(tmp_path, "r9")


def test_a_run_from_an_older_version_without_histograms_still_charts(tmp_path, make_run):
    old = StoreSpec("postgres", drop_columns=("histogram", "latency_p999_us", "latency_mean_us"))
    html = write_report(tmp_path, make_run(tmp_path, stores=[old, StoreSpec("redis")])).read_text()

    assert html.count("<svg ") == 3
    assert "could not be drawn" not in html
    summary = html[html.index('id="summary"') :]
    postgres = summary[summary.index("</span>postgres</span>") :]
    assert '<td class="num">—</td>' in postgres[: postgres.index("</tbody>")]  # p99.9 and mean unknown


def test_a_client_bound_store_is_called_out(tmp_path, make_run):
    warning = "load process 0 used 97% of a core on average"
    run_id = make_run(
        tmp_path,
        stores=[
            StoreSpec("redis", extra={"load": {"client_saturated": True, "client_saturation": warning}}),
            StoreSpec("postgres"),
        ],
    )
    html = write_report(tmp_path, run_id).read_text()
    assert 'id="client-bound"' in html
    assert warning in html
    callout = html[html.index('id="client-bound"') : html.index('id="parameters"')]
    assert "redis" in callout and "postgres" not in callout
