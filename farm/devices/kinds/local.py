"""kind: local: the agent runs on this host with no limits (and results say so: no container
peak, no memory limit)."""
from __future__ import annotations

import functools
import math
import os
from typing import Literal

from pydantic import Field

from farm.devices.health import check_here
from farm.devices.kinds.base import DeviceDescription, Kind


class LocalDevice(DeviceDescription):
    kind: Literal["local"]
    cpus: float | None = Field(None, gt=0)  # torch threads; default: all cores


def local_runner(device: LocalDevice):
    from farm.devices.process import start_local_agent
    from farm.devices.runner import AgentRunner

    threads = max(1, math.floor(device.cpus)) if device.cpus else os.cpu_count() or 1
    start = functools.partial(start_local_agent, threads=threads, python=device.python)
    return AgentRunner(device, start, threads)


KIND = Kind(LocalDevice, runner=local_runner, check=check_here)
