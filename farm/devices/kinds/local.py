"""kind: local: the agent runs on this host with no limits (and results say so: no container
peak, no memory limit)."""
from __future__ import annotations

import functools
import math
import os
from typing import Annotated, Literal

from pydantic import AfterValidator

from farm.devices.health import check_here
from farm.devices.kinds.base import DeviceDescription, Kind
from farm.limits import MAX_CPUS, cpus_on_this_host, positive


class LocalDevice(DeviceDescription):
    kind: Literal["local"]
    # torch threads; default: all cores
    cpus: Annotated[positive(MAX_CPUS), AfterValidator(cpus_on_this_host)] | None = None


def local_runner(device: LocalDevice):
    from farm.devices.process import start_local_agent
    from farm.devices.runner import AgentRunner

    threads = max(1, math.floor(device.cpus)) if device.cpus else os.cpu_count() or 1
    start = functools.partial(start_local_agent, threads=threads, python=device.python)
    return AgentRunner(device, start, threads)


KIND = Kind(LocalDevice, runner=local_runner, check=check_here)
