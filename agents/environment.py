"""What a result was measured on: read from the device itself, never assumed."""
import os
import platform
import re
import shutil
import subprocess

from agents.measure import proc_field


def _first_line(path):
    try:
        with open(path) as f:
            return f.readline().strip()
    except (IOError, OSError):
        return None


def _run(argv):
    try:
        out = subprocess.check_output(argv, stderr=subprocess.STDOUT, universal_newlines=True,
                                      timeout=10)
        return out.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except (IOError, OSError):
        pass
    return platform.processor() or None


def meminfo_mb(field):
    """A /proc/meminfo figure ('MemTotal', 'MemAvailable') in MiB."""
    kib = proc_field("/proc/meminfo", field)
    return kib / 1024.0 if kib is not None else None


def l4t_release(first_line):
    """'# R32 (release), REVISION: 7.1, ...' -> 'R32.7.1'."""
    if not first_line:
        return None
    match = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", first_line)
    return "R%s.%s" % match.groups() if match else first_line


def power_mode(nvpmodel_output):
    """The mode name from `nvpmodel -q` ('NV Power Mode: MAXN'), and its id on the next line."""
    if not nvpmodel_output:
        return None, None
    lines = [line.strip() for line in nvpmodel_output.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("NV Power Mode:"):
            mode_id = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].isdigit() else None
            return line.split(":", 1)[1].strip(), mode_id
    return None, None


def clocks_locked(show_output):
    """True when `jetson_clocks --show` has every online CPU and the GPU pinned (MinFreq equal to
    MaxFreq), as `sudo jetson_clocks` leaves them. EMC is left out: jetson_clocks pins it with
    FreqOverride=1 and leaves its MinFreq as it was."""
    if not show_output:
        return None
    pairs = []
    for line in show_output.splitlines():
        line = line.strip()
        if re.match(r"cpu\d+:", line) and "Online=0" in line:
            continue
        if re.match(r"(cpu\d+:|GPU )", line):
            pairs.extend(re.findall(r"MinFreq=(\d+) MaxFreq=(\d+)", line))
    return all(a == b for a, b in pairs) if pairs else None


def jetson_facts():
    """Power mode and clocks, read with the board's own tools (they need root; a board whose
    SSH user is not root may allow them through passwordless sudo)."""
    facts = {}
    release = _first_line("/etc/nv_tegra_release")
    if release:
        facts["l4t"] = l4t_release(release)
    if not (release or shutil.which("nvpmodel")):
        return facts  # not a Jetson
    query = _run(["nvpmodel", "-q"]) or _run(["sudo", "-n", "nvpmodel", "-q"])
    facts["power_mode"], facts["power_mode_id"] = power_mode(query)
    show = _run(["jetson_clocks", "--show"]) or _run(["sudo", "-n", "jetson_clocks", "--show"])
    facts["clocks_locked"] = clocks_locked(show)
    facts["jetson_clocks_show"] = show[:4000] if show else None
    return facts


def describe():
    """The machine: read once per agent, as the Jetson tools take a while to answer."""
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine(), "cpu_model": _cpu_model(),
           "cpu_count": os.cpu_count(), "memory_total_mb": meminfo_mb("MemTotal"),
           # Above the user's, the agent loses a shared core to anything else (farm starts it
           # at the niceness of `farm submit`, where the host allows it).
           "niceness": os.getpriority(os.PRIO_PROCESS, 0)}
    env.update(jetson_facts())
    return env


def torch_facts(torch):
    """What the loaded torch sees: its version, and the GPU where there is one."""
    env = {"torch": torch.__version__, "cuda_available": bool(torch.cuda.is_available())}
    if env["cuda_available"]:
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env
