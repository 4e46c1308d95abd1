"""kind: cgroup, an emulated board: the agent runs on this host inside a memory- and CPU-limited
cgroup (v1 or v2, farm.cgroups)."""
from __future__ import annotations

import functools
import math
from typing import Literal

from pydantic import ValidationInfo, field_validator

from farm.devices.health import check_here
from farm.devices.kinds.base import DeviceDescription, Kind, MemorySize
from farm.limits import MAX_CPUS, cpus_on_this_host, memory_on_this_host, positive


class CgroupDevice(DeviceDescription):
    kind: Literal["cgroup"]
    memory: MemorySize  # the container's memory limit; swap is off inside it
    cpus: positive(MAX_CPUS) = 1.0  # CPU allowance (CFS quota); torch threads = floor(cpus)

    @field_validator("memory", "cpus")
    @classmethod
    def _within_this_host(cls, value, info: ValidationInfo):
        if info.data.get("node"):  # another Ray node's resources are not known here
            return value
        return (memory_on_this_host if info.field_name == "memory" else cpus_on_this_host)(value)


def cgroup_runner(device: CgroupDevice):
    from farm.cgroups import open_container
    from farm.devices.process import start_local_agent
    from farm.devices.runner import AgentRunner

    threads = max(1, math.floor(device.cpus))  # torch threads follow the CPU allowance
    start = functools.partial(start_local_agent, threads=threads, python=device.python)
    return AgentRunner(
        device, start, threads,
        container_factory=lambda: open_container(device.name, device.memory, device.cpus))


KIND = Kind(CgroupDevice, runner=cgroup_runner, check=check_here)
