"""`farm devices check`: is a device fit to measure on? Each check reads the device itself.

Each kind of device checks its own way (farm.devices.kinds); the pieces here are shared:
check_here for devices on this host, facts_checks for what a probe of the agent read, the
cgroup check. A check that cannot run because an earlier one failed (no connection, no trusted
key) says so as 'skipped' rather than guessing.
"""
from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass

from farm.errors import DeviceError, FarmError

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skipped"


@dataclass(frozen=True)
class Check:
    item: str
    status: str  # OK, WARN, FAIL or SKIP
    detail: str


def check(device) -> list[Check]:
    """Each kind checks its own way (farm.devices.kinds): on this host, over SSH..."""
    from farm.devices.kinds import kind_of
    return kind_of(device).check(device)


def facts_checks(facts: dict) -> list[Check]:
    """What a probe (agents/probe.py --full) read, as checks."""
    out = [Check("python", OK, f"{facts.get('python')} ({facts.get('executable')})")]
    if facts.get("torch"):
        cuda = ", CUDA " + str(facts.get("cuda")) if facts.get("cuda_available") else ", no CUDA"
        out.append(Check("torch", OK, f"{facts['torch']}{cuda}"))
    else:
        out.append(Check("torch", FAIL, facts.get("torch_error") or "not importable"))
    if facts.get("transformers"):
        out.append(Check("transformers", OK, facts["transformers"]))
    else:
        out.append(Check("transformers", FAIL, facts.get("transformers_error") or "not importable"))
    available, total = facts.get("memory_available_mb"), facts.get("memory_total_mb")
    if available is not None:
        out.append(Check("memory", OK, f"{available:.0f} MiB free of {total:.0f} MiB"))
    if "power_mode" in facts or "clocks_locked" in facts:
        mode = facts.get("power_mode")
        out.append(Check("power mode", OK if mode else WARN,
                         f"{mode} (nvpmodel mode {facts.get('power_mode_id')})" if mode
                         else "nvpmodel -q gave no answer (it needs root or passwordless sudo)"))
        locked = facts.get("clocks_locked")
        out.append(Check("clocks", OK if locked else WARN,
                         "locked (jetson_clocks)" if locked else
                         "not locked: latency varies with DVFS; run `sudo jetson_clocks`"
                         if locked is False else "jetson_clocks --show gave no answer"))
    if facts.get("tegrastats"):
        out.append(Check("tegrastats", OK, f"{facts['tegrastats']} (board power and RAM)"))
    elif "power_mode" in facts:
        out.append(Check("tegrastats", WARN, "not on PATH: no energy figures"))
    return out


def container_check(device, host=None) -> Check:
    from farm.cgroups import open_container
    from farm.hosts import LOCAL

    if getattr(device, "memory", None) is None:
        return Check("cgroup", OK, "not used (no memory: set)")
    probe_name = f"{device.name}-check-{uuid.uuid4().hex[:6]}"
    try:
        container = open_container(probe_name, device.memory, device.cpus, host=host or LOCAL)
    except FarmError as error:
        return Check("cgroup", FAIL, error.message)
    limit = container.limit_bytes() / 2**20
    container.remove()
    return Check("cgroup", OK, f"{container.version}, {limit:.0f} MiB limit can be set")


def check_here(device) -> list[Check]:
    """A device on this host: the agent's interpreter probed here, and its cgroup if it has one."""
    from farm.devices.jetson import read_probe
    from farm.devices.process import AGENT_HOME, agent_env

    python = device.python or sys.executable
    try:
        done = subprocess.run([python, "-m", "agents.probe", "--full"], cwd=AGENT_HOME,
                              env=agent_env(1), capture_output=True, text=True, timeout=300)
        facts = read_probe(done.returncode, done.stdout, done.stderr, "this host", python)
    except OSError as error:
        return [Check("python", FAIL, f"{python}: {error.strerror}")]
    except DeviceError as error:
        return [Check("python", FAIL, error.message)]
    return facts_checks(facts) + [container_check(device)]


def skipped(*items: str) -> list[Check]:
    return [Check(item, SKIP, "needs the checks above") for item in items]
