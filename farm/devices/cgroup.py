"""An emulated device: the agent runs on this host inside a memory- and CPU-limited cgroup."""
from __future__ import annotations

import functools
import math

from farm.cgroups import open_container
from farm.devices.process import start_local_agent
from farm.devices.runner import AgentRunner


def cgroup_runner(device) -> AgentRunner:
    threads = max(1, math.floor(device.cpus))  # torch threads follow the CPU allowance
    start = functools.partial(start_local_agent, threads=threads, python=device.python)
    return AgentRunner(
        device, start, threads,
        container_factory=lambda: open_container(device.name, device.memory, device.cpus))
