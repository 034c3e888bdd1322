"""The measurement layer: window, per-second shipping and exact merging across processes."""

from __future__ import annotations

import random

from workloads.recorder import ALL, Aggregator, Recorder, decode, encode, latency_stats, new_histogram

S = 1_000_000_000
T0 = 1_700_000_000 * S


def recorder(duration_s: int = 10) -> Recorder:
    r = Recorder()
    r.set_window(T0, T0 + duration_s * S)
    return r


def test_samples_outside_the_window_are_not_recorded() -> None:
    r = recorder(2)
    r.measure("READ", T0 - 1, 100)  # warm-up
    r.measure("READ", T0, 200)
    r.measure("READ", T0 + 2 * S, 300)  # after the end
    agg = Aggregator()
    agg.add("p0", r.drain(T0 + 5 * S, final=True))
    agg.finish_all()
    assert agg.totals["READ"].service.get_total_count() == 1
    assert agg.totals["READ"].service.get_max_value() == 200


def test_nothing_is_recorded_before_the_window_is_known() -> None:
    r = Recorder()
    r.measure("READ", T0, 100)
    assert r.drain(T0 + S, final=True)["seconds"] == {}


def test_merge_of_processes_equals_one_histogram_of_all_samples() -> None:
    rng = random.Random(7)
    processes = [recorder() for _ in range(3)]
    reference = new_histogram()
    for _ in range(30_000):
        p = rng.randrange(3)
        latency = int(rng.lognormvariate(5, 1.2)) + 1
        start = T0 + rng.randrange(10 * S)
        processes[p].measure("READ", start, latency)
        reference.record_value(latency)
    agg = Aggregator(expected_processes=3)
    # ship in two rounds, as Locust's periodic reports would, then the final rest
    for i, r in enumerate(processes):
        agg.add(f"p{i}", r.drain(T0 + 6 * S))
    for i, r in enumerate(processes):
        agg.add(f"p{i}", r.drain(T0 + 20 * S, final=True))
    agg.finish_all()
    merged = agg.totals["READ"].service
    assert merged.get_total_count() == reference.get_total_count() == 30_000
    for q in (50, 90, 99, 99.9, 100):
        assert merged.get_value_at_percentile(q) == reference.get_value_at_percentile(q)
    reads = sorted((row for row in agg.rows if row["operation"] == "READ"), key=lambda row: row["second"])
    assert [row["second"] for row in reads] == list(range(10))
    assert sum(row["ops"] for row in reads) == 30_000


def test_a_second_is_finished_only_when_every_process_has_passed_it() -> None:
    a, b = recorder(), recorder()
    a.measure("READ", T0 + 100, 10)
    b.measure("READ", T0 + 200, 20)
    agg = Aggregator(expected_processes=2)
    agg.add("a", a.drain(T0 + 3 * S))  # a is past second 0 ...
    assert agg.rows == []  # ... but b has not reported yet
    agg.add("b", b.drain(T0 + 3 * S))
    row = next(r for r in agg.rows if r["operation"] == ALL and r["second"] == 0)
    assert row["ops"] == 2


def test_a_straggler_after_its_second_was_shipped_still_counts_in_the_totals() -> None:
    r = recorder()
    r.measure("READ", T0 + 100, 10)
    agg = Aggregator()
    agg.add("p", r.drain(T0 + 3 * S))
    r.measure("READ", T0 + 200, 2_500_000)  # started in second 0, finished 2.5 s later
    agg.add("p", r.drain(T0 + 4 * S, final=True))
    agg.finish_all()
    assert agg.totals["READ"].service.get_total_count() == 2
    assert agg.late_samples == 1
    assert len([row for row in agg.rows if row["operation"] == "READ" and row["second"] == 0]) == 1


def test_errors_are_counted_per_operation_and_type_not_put_in_latency() -> None:
    r = recorder()
    r.measure("UPDATE", T0, 50, error="TimeoutError")
    r.measure("UPDATE", T0 + 1, 60, error="TimeoutError")
    r.measure("UPDATE", T0 + 2, 70, error="ConnectionError")
    r.error_example("UPDATE", "TimeoutError", "timed out")
    r.measure("UPDATE", T0 + 3, 80)
    agg = Aggregator()
    agg.add("p", r.drain(T0, final=True))
    agg.finish_all()
    assert agg.totals["UPDATE"].errors == 3
    assert agg.totals["UPDATE"].service.get_total_count() == 1
    assert dict(agg.error_counts) == {("UPDATE", "TimeoutError"): 2, ("UPDATE", "ConnectionError"): 1}
    assert agg.error_examples[("UPDATE", "TimeoutError")] == "timed out"


def test_intended_latency_is_kept_apart_from_service_time() -> None:
    r = recorder()
    for i in range(100):
        r.measure("READ", T0 + i, 100, intended_latency_us=100 + i * 1000)
    agg = Aggregator()
    agg.add("p", r.drain(T0, final=True))
    agg.finish_all()
    totals = agg.totals["READ"]
    assert totals.service.get_value_at_percentile(99) == 100
    assert totals.intended.get_value_at_percentile(99) > 90_000


def test_microsecond_resolution_below_a_millisecond() -> None:
    h = new_histogram()
    for value in (87, 88, 89, 90, 91):
        h.record_value(value)
    stats = latency_stats(decode(encode(h)))
    assert stats["latency_p50_us"] == 89
    assert stats["latency_min_us"] == 87
    assert stats["latency_max_us"] == 91


def test_slowest_operations_are_kept_with_key_and_offset() -> None:
    r = Recorder(slowest_kept=3)
    r.set_window(T0, T0 + 10 * S)
    for i in range(200):
        r.measure("READ", T0 + i * 1_000_000, 100 + i, key=f"user{i}")
    shipment = r.drain(T0, final=True)
    assert [s[0] for s in shipment["slowest"]] == [299, 298, 297]
    assert shipment["slowest"][0][2] == "user199"
    assert shipment["slowest"][0][3] == 199  # ms after the window start
