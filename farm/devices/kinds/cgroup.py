"""kind: cgroup, an emulated board: the agent runs on this host inside a memory- and CPU-limited
cgroup (v1 or v2, farm.cgroups), pinned to cores of its own (cpuset) where the host has enough:
a CPU quota alone lets two devices, or any other process, take turns on one core, and the
timing shows it."""
from __future__ import annotations

import functools
import math
import os
from typing import Literal

from pydantic import ValidationInfo, field_validator

from farm.cgroups import cores_in_use
from farm.devices.health import check_here
from farm.devices.kinds.base import DeviceDescription, Kind, MemorySize
from farm.limits import MAX_CPUS, cpus_on_this_host, memory_on_this_host, positive


class CgroupDevice(DeviceDescription):
    kind: Literal["cgroup"]
    memory: MemorySize  # the container's memory limit; swap is off inside it
    cpus: positive(MAX_CPUS) = 1.0  # CPU allowance (CFS quota); torch threads = floor(cpus)
    # The CPUs it is pinned to (cpuset). Unset: farm gives a device with whole cpus dedicated
    # cores of this host, and the fractional ones the cores left over (place_on_cores).
    cores: tuple[int, ...] | None = None

    @field_validator("memory", "cpus")
    @classmethod
    def _within_this_host(cls, value, info: ValidationInfo):
        if info.data.get("node"):  # another Ray node's resources are not known here
            return value
        return (memory_on_this_host if info.field_name == "memory" else cpus_on_this_host)(value)


    @field_validator("cores")
    @classmethod
    def _cores_here(cls, cores, info: ValidationInfo):
        if cores is None or info.data.get("node"):
            return cores
        known = sorted(os.sched_getaffinity(0))
        missing = [c for c in cores if c not in known]
        if missing or not cores:
            raise ValueError(f"no CPU {missing or cores} here: this host's are {known}")
        return tuple(sorted(set(cores)))


def place_on_cores(devices: list[CgroupDevice]) -> tuple[list[CgroupDevice], list]:
    """The run's cgroup devices, those on this host pinned: each with whole cpus to cores of its
    own, the fractional ones to the cores left over. Where they ask for more CPUs than this
    host lets farm use, none is pinned, and the user is told before anything runs."""
    here = [d for d in devices if d.node is None]
    cpus = sorted(os.sched_getaffinity(0))
    asked = sum(len(d.cores) if d.cores else math.ceil(d.cpus) for d in here)
    if asked > len(cpus):
        names = ", ".join(d.name for d in here)
        return devices, [(
            f"devices {names} ask for {asked} CPUs and this host has {len(cpus)}: they share "
            "cores (none is pinned), so their timings include each other's; each result records "
            "the CPU time others took on its cores (outside CPU)",
            "give them fewer cpus, or run fewer of them at once (the sweep's devices:)")]
    # Cores another farm run's devices are pinned to now are not free either.
    taken = cores_in_use({d.name for d in here})
    free = [c for c in cpus if c not in taken and not any(c in (d.cores or ()) for d in here)]
    whole = sum(int(d.cpus) for d in here if d.cores is None and _whole(d))
    if whole > len(free):
        return devices, [(
            f"cores {sorted(taken)} are pinned to another farm run's devices, and "
            f"{', '.join(d.name for d in here)} need {whole} more: they are not pinned, and "
            "each result records the CPU time others took on its cores (outside CPU)",
            "wait for the other run to end, or give these devices fewer cpus")]
    placed = {}
    for device in here:
        if device.cores is None and _whole(device):
            placed[device.name], free = tuple(free[:int(device.cpus)]), free[int(device.cpus):]
    for device in here:  # fractional devices share what is left
        if device.cores is None and not _whole(device) and free:
            placed[device.name] = tuple(free)
    return [d.model_copy(update={"cores": placed[d.name]}) if d.name in placed else d
            for d in devices], []


def _whole(device: CgroupDevice) -> bool:
    return device.cpus == int(device.cpus)


def cgroup_runner(device: CgroupDevice):
    from farm.cgroups import open_container
    from farm.devices.process import start_local_agent
    from farm.devices.runner import AgentRunner

    threads = max(1, math.floor(device.cpus))  # torch threads follow the CPU allowance
    start = functools.partial(start_local_agent, threads=threads, python=device.python)
    return AgentRunner(
        device, start, threads,
        container_factory=lambda: open_container(device.name, device.memory, device.cpus,
                                                 cores=device.cores))


KIND = Kind(CgroupDevice, runner=cgroup_runner, check=check_here, place=place_on_cores)
