"""Workload definitions: YCSB's core workloads a-f and custom YAML workloads.

The vocabulary follows YCSB's `CoreWorkload` properties, spelled as Python names:
`recordcount` -> `record_count`, `readproportion` -> `operations.read`, and so on.
Every spec is validated here, before anything connects to a store, and every
mistake becomes an `OptiStackError` that says what to change.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workloads.errors import OptiStackError

# Operation names as they appear in results (YCSB prints them upper-case too).
OPERATIONS = ("read", "update", "insert", "scan", "read_modify_write", "delete")
OPERATION_ALIASES = {"readmodifywrite": "read_modify_write", "rmw": "read_modify_write"}
DISTRIBUTIONS = ("uniform", "zipfian", "latest", "hotspot", "sequential")

# Upper bounds that keep a typo (10^12 records) from starting hours of seeding.
MAX_RECORD_COUNT = 1_000_000_000
MAX_FIELD_COUNT = 1_000
MAX_FIELD_LENGTH = 1_000_000
MAX_SCAN_LENGTH = 100_000


class WorkloadSpec(BaseModel):
    """One workload: data shape, operation mix and key distribution.

    Defaults are YCSB's `CoreWorkload` defaults (10 fields of 100 bytes,
    zipfian constant 0.99, scans of up to 1000 records uniformly chosen).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    description: str = ""
    record_count: int = Field(1000, ge=1, le=MAX_RECORD_COUNT)
    field_count: int = Field(10, ge=1, le=MAX_FIELD_COUNT)
    field_length: int = Field(100, ge=1, le=MAX_FIELD_LENGTH)
    operations: dict[str, float]
    request_distribution: str = "uniform"
    zipfian_constant: float = Field(0.99, gt=0.0, lt=1.0)
    hotspot_data_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    hotspot_opn_fraction: float = Field(0.8, gt=0.0, lt=1.0)
    max_scan_length: int = Field(1000, ge=1, le=MAX_SCAN_LENGTH)
    scan_length_distribution: Literal["uniform", "zipfian"] = "uniform"
    read_all_fields: bool = True
    write_all_fields: bool = False

    @field_validator("operations", mode="before")
    @classmethod
    def _normalise_operations(cls, value: Any) -> dict[str, float]:
        if not isinstance(value, dict) or not value:
            raise ValueError("operations must be a mapping such as {read: 0.5, update: 0.5}")
        out: dict[str, float] = {}
        for raw_name, share in value.items():
            name = OPERATION_ALIASES.get(str(raw_name).lower(), str(raw_name).lower())
            if name not in OPERATIONS:
                raise ValueError(f"unknown operation {raw_name!r}; use one of {', '.join(OPERATIONS)}")
            try:
                share = float(share)
            except (TypeError, ValueError):
                raise ValueError(f"the share of {name} must be a number, not {share!r}") from None
            if not math.isfinite(share) or share < 0 or share > 1:
                raise ValueError(f"the share of {name} must be between 0 and 1, not {share}")
            if share > 0:
                out[name] = share
        if not out:
            raise ValueError("operations has no operation with a share above 0")
        return out

    @field_validator("request_distribution")
    @classmethod
    def _known_distribution(cls, value: str) -> str:
        if value not in DISTRIBUTIONS:
            raise ValueError(f"unknown request_distribution {value!r}; use one of {', '.join(DISTRIBUTIONS)}")
        return value

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> WorkloadSpec:
        total = sum(self.operations.values())
        if abs(total - 1.0) > 1e-6:
            mix = ", ".join(f"{k}: {v}" for k, v in self.operations.items())
            raise ValueError(f"operation shares must sum to 1, but {mix} sum to {total:g}")
        return self

    def with_overrides(self, **overrides: Any) -> WorkloadSpec:
        """Return a validated copy with the given fields replaced (None means keep)."""
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return parse_spec(data, source=f"workload {self.name!r}")

    def total_record_bytes(self) -> int:
        """Approximate bytes of field data one seeded record carries."""
        return self.field_count * self.field_length


def _core(
    name: str, description: str, operations: dict[str, float], distribution: str, **extra: Any
) -> WorkloadSpec:
    return WorkloadSpec(
        name=name,
        description=description,
        operations=operations,
        request_distribution=distribution,
        **extra,
    )


# YCSB's workloads/workload[a-f], property for property (recordcount aside, which
# every run sets). Workload e's scans are uniform up to 100 records.
CORE_WORKLOADS: dict[str, WorkloadSpec] = {
    "a": _core("a", "Update heavy: read 50% / update 50%, zipfian", {"read": 0.5, "update": 0.5}, "zipfian"),
    "b": _core("b", "Read mostly: read 95% / update 5%, zipfian", {"read": 0.95, "update": 0.05}, "zipfian"),
    "c": _core("c", "Read only: read 100%, zipfian", {"read": 1.0}, "zipfian"),
    "d": _core("d", "Read latest: read 95% / insert 5%, latest", {"read": 0.95, "insert": 0.05}, "latest"),
    "e": _core(
        "e",
        "Short ranges: scan 95% / insert 5%, zipfian, scan length uniform up to 100",
        {"scan": 0.95, "insert": 0.05},
        "zipfian",
        max_scan_length=100,
        scan_length_distribution="uniform",
    ),
    "f": _core(
        "f",
        "Read-modify-write: read 50% / read-modify-write 50%, zipfian",
        {"read": 0.5, "read_modify_write": 0.5},
        "zipfian",
    ),
}


def _explain(error: ValidationError, source: str) -> OptiStackError:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "workload"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            known = ", ".join(WorkloadSpec.model_fields)
            message = f"unknown setting; known settings are {known}"
        lines.append(f"  {where}: {message}")
    return OptiStackError(f"{source} is not valid:\n" + "\n".join(lines))


def parse_spec(data: dict[str, Any], source: str = "workload") -> WorkloadSpec:
    """Validate a workload mapping (YAML vocabulary) into a `WorkloadSpec`."""
    if not isinstance(data, dict):
        raise OptiStackError(f"{source} must be a mapping of settings, not {type(data).__name__}")
    try:
        return WorkloadSpec.model_validate(data)
    except ValidationError as error:
        raise _explain(error, source) from None


def load_workload(name_or_path: str, search_dirs: list[Path] | None = None) -> WorkloadSpec:
    """Resolve a core workload letter (`a`-`f`) or a YAML file into a spec.

    A bare name is looked up as `<dir>/<name>.yaml` in `search_dirs` too, so the
    Airflow form can offer the files of `include/workloads/` by name.
    """
    key = str(name_or_path).strip()
    if key.lower() in CORE_WORKLOADS:
        return CORE_WORKLOADS[key.lower()]
    candidates = [Path(key)]
    for directory in search_dirs or []:
        candidates += [directory / key, directory / f"{key}.yaml", directory / f"{key}.yml"]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise OptiStackError(
            f"unknown workload {key!r}: use a core workload (a, b, c, d, e, f) "
            "or the path of a YAML workload file"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise OptiStackError(f"workload file {path} is not valid YAML: {error}") from None
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    return parse_spec(data, source=f"workload file {path}")
