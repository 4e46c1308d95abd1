"""Acting on devices. Inventory entries (farm.inventory) only describe a device; a runner made by
runner_for() does the work, one module per kind of device, all behind DeviceRunner.
"""
from __future__ import annotations

import json
from typing import Callable, Protocol

# Job outcomes a runner reports. 'queued', 'running' and 'cancelled' are the controller's.
DONE, OOM, FAILED, TIMEOUT, CANCELLED = "done", "oom", "failed", "timeout", "cancelled"
# Why an attempt did not end done: the device or the way to it failed (the job may well succeed
# elsewhere or later), or the job itself did (model error, oom, timeout: final).
INFRA, JOB = "infra", "job"


def group_key(spec: dict) -> str:
    """Jobs of one group share a loaded model on a device: same model, same variant."""
    return json.dumps([spec["model"], spec["variant"]], sort_keys=True)


class DeviceRunner(Protocol):
    def prepare(self, **context) -> dict:
        """Make the device ready (container, agent upload); return facts about it, with the
        given context (host, Ray node), to be recorded with every result."""

    def run(self, job: dict, on_event: Callable[[dict], None]) -> dict:
        """Run one job to an outcome: {'status', 'error', 'result', 'started_at', ...}."""

    def cancel(self) -> None:
        """Stop the running job (from another thread); run() then returns 'cancelled'."""

    def close(self) -> None:
        """Stop the agent and release the device (remove its container)."""


def runner_for(device) -> DeviceRunner:
    if device.kind == "cgroup":
        from farm.devices.cgroup import cgroup_runner
        return cgroup_runner(device)
    if device.kind == "jetson":
        from farm.devices.jetson import jetson_runner
        return jetson_runner(device)
    if device.kind == "local":
        from farm.devices.local import local_runner
        return local_runner(device)
    raise ValueError(f"no runner for device kind {device.kind!r}")
