"""Store registry: every module in this package registers its store by name.

Adding a store means adding one module here that defines a `Store` subclass
decorated with `@register`; discovery imports the package's modules on first use.
"""

from __future__ import annotations

import importlib
import pkgutil

from workloads.errors import OptiStackError
from workloads.stores.base import Store

_REGISTRY: dict[str, type[Store]] = {}
_DISCOVERED = False


def register(cls: type[Store]) -> type[Store]:
    """Class decorator: make a store available under `cls.name`."""
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    _DISCOVERED = True


def store_names() -> list[str]:
    """Names of every registered store, sorted."""
    _discover()
    return sorted(_REGISTRY)


def get_store(name: str) -> type[Store]:
    """The store class registered as `name`, or an error listing the known ones."""
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise OptiStackError(
            f"unknown store {name!r}; known stores: {', '.join(sorted(_REGISTRY))}"
        ) from None
