"""Store registry: every module in this package is one store, named like the module.

Adding a store means adding one module here that defines a `Store` subclass named
like the module (`name = "redis"` in `redis.py`) and decorated with `@register`.
A store's module (and its driver) is imported only when that store is used: listing
the stores imports nothing, and a run against Redis never loads boto3.
"""

from __future__ import annotations

import importlib
import pkgutil

from workloads.errors import OptiStackError
from workloads.stores.base import Store

_REGISTRY: dict[str, type[Store]] = {}


def register(cls: type[Store]) -> type[Store]:
    """Class decorator: make a store available under `cls.name` (its module's name)."""
    _REGISTRY[cls.name] = cls
    return cls


def store_names() -> list[str]:
    """Names of every store, sorted, without importing any of them."""
    return sorted(
        m.name for m in pkgutil.iter_modules(__path__) if m.name != "base" and not m.name.startswith("_")
    )


def get_store(name: str) -> type[Store]:
    """The store class registered as `name`, or an error listing the known ones."""
    if name not in _REGISTRY:
        if name not in store_names():
            raise OptiStackError(f"unknown store {name!r}; known stores: {', '.join(store_names())}")
        importlib.import_module(f"{__name__}.{name}")
        if name not in _REGISTRY:  # pragma: no cover - a module that forgot @register
            raise OptiStackError(f"store module {name!r} registers no store named {name!r}")
    return _REGISTRY[name]
