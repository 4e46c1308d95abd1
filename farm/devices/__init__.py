"""Acting on devices. Inventory entries (farm.inventory) only describe a device; a runner made by
runner_for() does the work, all behind DeviceRunner. Each kind of device is one module in
farm.devices.kinds, which gives its description, runner and health check.
"""
from __future__ import annotations

import json
from typing import Callable, Protocol

# How a job ends (farm.results.Status) and why it failed (farm.results.Failure) are declared
# with the result.


def group_key(spec: dict) -> str:
    """Jobs of one group share a loaded model on a device: same model, same variant, same
    repeat (each repeat of a sweep's `repeats` is its own agent process, so that the spread
    between processes is measured; repeat 1 keeps the group it had without repeats)."""
    variant = [spec["variant"]] + ([spec["variant_spec"]] if spec.get("variant_spec") else [])
    repeat = [{"repeat": spec["repeat"]}] if spec.get("repeat", 1) > 1 else []
    return json.dumps([spec["model"], *variant, *repeat], sort_keys=True)


class DeviceRunner(Protocol):
    def prepare(self, owner=None, **context) -> dict:
        """Make the device ready (container, agent upload); return facts about it, with the
        given context (host, Ray node), to be recorded with every result. Holds the device
        for `owner` (farm.devices.lock.Owner) until close(); Busy if another farm holds it."""

    def run(self, job: dict, on_event: Callable[[dict], None]) -> dict:
        """Run one job to an outcome: {'status', 'error', 'result', 'started_at', ...}."""

    def cancel(self) -> None:
        """Stop the running job (from another thread); run() then returns 'cancelled'."""

    def close(self) -> None:
        """Stop the agent and release the device (remove its container)."""


def runner_for(device) -> DeviceRunner:
    """The runner of the device's kind (farm.devices.kinds)."""
    from farm.devices.kinds import kind_of
    return kind_of(device).runner(device)
