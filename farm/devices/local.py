"""A local device: the agent runs on this host with no limits (and results say so: no container
peak, no memory limit)."""
from __future__ import annotations

import functools
import math
import os

from farm.devices.process import start_local_agent
from farm.devices.runner import AgentRunner


def local_runner(device) -> AgentRunner:
    threads = max(1, math.floor(device.cpus)) if device.cpus else os.cpu_count() or 1
    start = functools.partial(start_local_agent, threads=threads, python=device.python)
    return AgentRunner(device, start, threads)
