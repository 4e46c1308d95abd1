"""The kinds of device farm knows: one module each in this package, one line each in KINDS.

A kind module declares its inventory entry (a frozen DeviceDescription), the runner factory, the
health check, and what `farm devices` and the sweep's settings need to know about it, in one
`KIND = Kind(...)` (farm.devices.kinds.base). Everything that differs by kind asks here: the
inventory's parsing (AnyDevice), runner_for, `farm devices check`, `farm devices trust`,
require_locked_clocks, the "where" of `farm devices`. The README's "Adding a device kind" walks
through a new one.
"""
from __future__ import annotations

import importlib

from pydantic_core import core_schema

from farm.devices.kinds.base import DeviceDescription, Kind

# The registry table: the modules of this package that hold a kind, each with `KIND`.
KINDS = (
    "cgroup",  # this host's CPU inside a memory/CPU-limited cgroup: an emulated board
    "local",  # this host, no limits
    "jetson",  # a Jetson board over SSH
)

_registered: dict[str, Kind] = {}
_holders: list[type] = []  # models with an AnyDevice field


def register(kind: Kind) -> Kind:
    """Add a kind (the table's are added on import; a plugin or a test may add more)."""
    known = _registered.get(kind.name)
    if known is not None and known is not kind:
        raise ValueError(f"a device kind {kind.name!r} is registered already")
    _registered[kind.name] = kind
    _rebuild_holders()
    return kind


def unregister(name: str) -> None:
    _registered.pop(name, None)
    _rebuild_holders()


def kind_of(device: DeviceDescription) -> Kind:
    kind = _registered.get(device.kind)
    if kind is None:
        raise ValueError(f"no device kind {device.kind!r} is registered")
    return kind


def kinds() -> list[Kind]:
    return list(_registered.values())


def names() -> list[str]:
    return list(_registered)


class AnyDevice:
    """A pydantic type: the description of any registered kind, chosen by its `kind:` key."""

    @classmethod
    def __get_pydantic_core_schema__(cls, _source, handler):
        return core_schema.tagged_union_schema(
            {name: handler.generate_schema(kind.description)
             for name, kind in _registered.items()}, discriminator="kind")


def holds_devices(model: type) -> type:
    """Class decorator for a model with an AnyDevice field. pydantic fixes a union's members
    when it builds a model, so such models are rebuilt whenever a kind comes or goes."""
    _holders.append(model)
    return model


def _rebuild_holders() -> None:
    for model in _holders:
        model.model_rebuild(force=True)


for _module in KINDS:
    register(importlib.import_module(f"{__name__}.{_module}").KIND)
