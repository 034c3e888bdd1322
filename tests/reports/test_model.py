"""The figures and words a report prints, computed without rendering anything."""

from __future__ import annotations

from reports.model import (
    describe_distribution,
    describe_mix,
    fmt_number,
    fmt_time,
    parse_expectations,
    redact,
)


def test_numbers_and_times_are_printed_for_people():
    assert fmt_number(1234567.8) == "1,234,568"
    assert fmt_number(61.24) == "61.2"
    assert fmt_number(7) == "7"
    assert fmt_number(None) == fmt_number(float("nan")) == "—"
    assert fmt_time("2026-12-04T21:15:00+01:00") == "2026-12-04 20:15:00 UTC"
    assert fmt_time("not a time") == "not a time"


def test_the_workload_is_described_in_words():
    assert describe_mix({"update": 0.05, "read": 0.95}) == "read 95% · update 5%"
    assert describe_mix({"read_modify_write": 0.5, "read": 0.5}) == "read-modify-write 50% · read 50%"
    assert describe_distribution({"request_distribution": "zipfian", "zipfian_constant": 0.99}) == (
        "zipfian (constant 0.99)"
    )
    assert (
        describe_distribution(
            {"request_distribution": "hotspot", "hotspot_data_fraction": 0.2, "hotspot_opn_fraction": 0.8}
        )
        == "hotspot (80% of operations on 20% of the keys)"
    )


def test_passwords_in_urls_are_masked():
    assert redact("postgresql://bench:s3cret@db:5432/x and redis://:pw@r:6379/0") == (
        "postgresql://bench:***@db:5432/x and redis://:***@r:6379/0"
    )
    assert redact("postgresql://bench@db/x") == "postgresql://bench@db/x"


def test_validation_results_are_read_in_the_engine_shape():
    checks = parse_expectations(
        {
            "success": False,
            "results": [
                {"name": "seeded_count", "success": False, "observed": 900, "expected": "1000 records",
                 "details": {"failures": ["900 records counted in the store after seeding"], "gx": []}},
                {"name": "intended_latency_percentiles_ordered", "success": True, "observed": None,
                 "expected": "ordered", "details": {"skipped": "closed-loop run"}},
                {"name": "latency_percentiles_ordered", "success": True, "expected": "ordered",
                 "observed": {op: {f"p{i}": i * 1000.0 for i in range(12)} for op in ("ALL", "READ", "UPDATE")}},
            ],
        }
    )  # fmt: skip
    seeded, skipped, ordered = checks
    assert (seeded.name, seeded.passed, seeded.observed, seeded.expected) == (
        "seeded_count", False, "900", "1000 records"
    )  # fmt: skip
    assert seeded.failures == ["900 records counted in the store after seeding"]
    assert skipped.skipped == "closed-loop run" and skipped.observed == "—"
    # A long observed mapping is shortened, and kept whole for the expandable cell.
    assert len(ordered.observed) <= 140 and ordered.observed.endswith("…")
    assert ordered.observed_full.startswith("ALL: (p0: 0, p1: 1,000,")


def test_validation_results_are_read_in_great_expectations_shape():
    (check,) = parse_expectations(
        {
            "success": True,
            "results": [
                {
                    "success": True,
                    "expectation_config": {
                        "type": "expect_column_max_to_be_between",
                        "kwargs": {"column": "errors", "max_value": 0, "batch_id": "b"},
                    },
                    "result": {"observed_value": 0},
                }
            ],
        }
    )
    assert (check.name, check.column, check.expected, check.observed, check.passed) == (
        "expect_column_max_to_be_between", "errors", "max_value: 0", "0", True
    )  # fmt: skip
