"""What a timed window ran under, read on the device itself: the CPU time other processes took on
the agent's CPUs, the host's load, CPU and GPU clocks, and temperatures. Nothing read, nothing
stored: a figure without a source is left out, never guessed.

    window = Window(meter); window.start(); ...timed calls...; figures = window.stop()

Sources:
  CPU time  /proc/stat's busy ticks of the CPUs the agent may run on (its affinity: a pinned
            device's cpuset), less the agent's own CPU time (every thread) over the window.
  clocks    a Jetson's tegrastats (its CPU [..%@MHz] and GR3D_FREQ fields), sampled through the
            window; else cpufreq's scaling_cur_freq, else /proc/cpuinfo's "cpu MHz", at its
            start and end, averaged over the agent's CPUs.
  heat      tegrastats' CPU@ sensor; else the thermal zone that is the CPU package (or the
            hottest readable one), at start and end.
"""
import functools
import glob
import os
import re
import time

BUSY_SHARE = 0.10  # other processes took over this share of the agent's CPUs: host_busy
THROTTLE_DROP = 0.05  # a clock this far below its reading at the window's start: throttled
_CPU_ZONES = ("x86_pkg_temp", "cpu", "soc", "package")


def agent_cpus():
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def cpu_list(cpus):
    """[0, 1, 2, 5] -> '0-2,5' (the kernel's own cpuset notation)."""
    runs, parts = [], []
    for cpu in cpus:
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    for low, high in runs:
        parts.append(str(low) if low == high else "%d-%d" % (low, high))
    return ",".join(parts)


def busy_ticks(cpus, stat_text=None):
    """Busy clock ticks (user, nice, system, irq, softirq, steal) of these CPUs since boot."""
    if stat_text is None:
        try:
            with open("/proc/stat") as f:
                stat_text = f.read()
        except (IOError, OSError):
            return None
    wanted, total = set("cpu%d" % c for c in cpus), 0
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] in wanted:
            ticks = [int(x) for x in fields[1:9]] + [0] * 8
            total += ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    return total


def own_cpu_s():
    """This process's CPU time, every thread, to the nanosecond (CLOCK_PROCESS_CPUTIME_ID)."""
    return time.process_time()


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (IOError, OSError, ValueError, IndexError):
        return None


def cpufreq_mhz(cpus):
    values = []
    for cpu in cpus:
        try:
            with open("/sys/devices/system/cpu/cpu%d/cpufreq/scaling_cur_freq" % cpu) as f:
                values.append(int(f.read()) / 1000.0)
        except (IOError, OSError, ValueError):
            return None
    return sum(values) / len(values) if values else None


def cpuinfo_mhz(cpus, text=None):
    if text is None:
        try:
            with open("/proc/cpuinfo") as f:
                text = f.read()
        except (IOError, OSError):
            return None
    found, processor = {}, None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "processor":
            processor = int(value)
        elif name == "cpu mhz" and processor is not None:
            found[processor] = float(value)
    values = [found[c] for c in cpus if c in found]
    return sum(values) / len(values) if values else None


@functools.lru_cache(maxsize=None)  # the zones stay put: looked for once per agent, not per job
def thermal_zone(base="/sys/class/thermal"):
    """(temp file, its name) of the CPU's thermal zone, else the hottest readable one."""
    zones = []
    for folder in sorted(glob.glob(os.path.join(base, "thermal_zone*"))):
        try:
            with open(os.path.join(folder, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(folder, "temp")) as f:
                celsius = int(f.read()) / 1000.0
        except (IOError, OSError, ValueError):
            continue
        zones.append((os.path.join(folder, "temp"), "%s %s" % (os.path.basename(folder), kind),
                      kind.lower(), celsius))
    for path, name, kind, _ in zones:
        if any(word in kind for word in _CPU_ZONES):
            return path, name
    if zones:
        path, name, _, _ = max(zones, key=lambda z: z[3])
        return path, name
    return None


def read_celsius(path):
    try:
        with open(path) as f:
            return int(f.read()) / 1000.0
    except (IOError, OSError, ValueError):
        return None


_TEGRA_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_TEGRA_GPU = re.compile(r"\bGR3D_FREQ \d+%@\[?(\d+)")
_TEGRA_TEMP = re.compile(r"\b([A-Za-z]+)@(-?\d+(?:\.\d+)?)C\b")


def parse_tegrastats_clocks(line):
    """{'cpu_mhz': mean of the online cores, 'gpu_mhz', 'temps': {sensor: C}} of one line."""
    found = {}
    cpu = _TEGRA_CPU.search(line)
    if cpu:
        clocks = [int(m) for m in re.findall(r"%@(\d+)", cpu.group(1))]  # 'off' cores are out
        if clocks:
            found["cpu_mhz"] = sum(clocks) / float(len(clocks))
    gpu = _TEGRA_GPU.search(line)
    if gpu:
        found["gpu_mhz"] = float(gpu.group(1))
    temps = dict((name, float(value)) for name, value in _TEGRA_TEMP.findall(line))
    if temps:
        found["temps"] = temps
    return found


def tegra_temp(temps):
    """The CPU sensor; PMIC is left out (the Nano's reads a fixed 100C)."""
    if "CPU" in temps:
        return temps["CPU"], "tegrastats CPU"
    others = dict((k, v) for k, v in temps.items() if k != "PMIC")
    if not others:
        return None, None
    name = max(others, key=others.get)
    return others[name], "tegrastats " + name


class Window(object):
    """The conditions of one timed window. `meter` is the agent's energy meter: a Jetson's
    tegrastats also gives its clocks and temperatures."""

    def __init__(self, meter=None):
        self.clock_samples = getattr(meter, "clock_samples", None)
        self.cpus = agent_cpus()
        self.zone = None if self.clock_samples else thermal_zone()

    def start(self):
        self.t0 = time.monotonic()
        self.busy0, self.own0 = busy_ticks(self.cpus), own_cpu_s()
        self.host0 = self._host_reading()
        return self

    def stop(self):
        t1 = time.monotonic()
        busy1, own1 = busy_ticks(self.cpus), own_cpu_s()
        span = t1 - self.t0
        figures = {"load_avg_1m": load_average(), "cpu_list": cpu_list(self.cpus)}
        if self.busy0 is not None and busy1 is not None and span > 0:
            tick = 1.0 / os.sysconf("SC_CLK_TCK")
            outside = max(0.0, (busy1 - self.busy0) * tick - (own1 - self.own0))
            share = outside / (span * len(self.cpus))
            # /proc/stat counts whole ticks: up to one per CPU may be a rounding, not a process.
            doubt = len(self.cpus) * tick / (span * len(self.cpus))
            figures.update(outside_cpu_s=outside, outside_cpu_share=share,
                           host_busy=int(share - doubt > BUSY_SHARE))
        if self.clock_samples is not None:
            figures.update(self._tegrastats(self.t0, t1))
        else:
            figures.update(self._host(self.host0, self._host_reading()))
        return figures

    def _host_reading(self):
        if self.clock_samples is not None:
            return None
        mhz, source = cpufreq_mhz(self.cpus), "cpufreq"
        if mhz is None:
            mhz, source = cpuinfo_mhz(self.cpus), "cpuinfo"
        temp = read_celsius(self.zone[0]) if self.zone else None
        return {"cpu_mhz": mhz, "clock_source": source if mhz is not None else None,
                "temp": temp}

    def _host(self, start, end):
        figures = {}
        if start["cpu_mhz"] is not None and end["cpu_mhz"] is not None:
            figures.update(cpu_mhz_start=start["cpu_mhz"], cpu_mhz_end=end["cpu_mhz"],
                           cpu_mhz_min=min(start["cpu_mhz"], end["cpu_mhz"]),
                           clock_source=end["clock_source"])
        if start["temp"] is not None and end["temp"] is not None:
            figures.update(temp_c_start=start["temp"], temp_c_end=end["temp"],
                           temp_c_max=max(start["temp"], end["temp"]), temp_source=self.zone[1])
        return _with_throttled(figures)

    def _tegrastats(self, t0, t1):
        """From tegrastats' samples: the last one at or before the window's start, every one
        inside it, and the first after it where it has come (no wait for it: the energy
        meter's window must not grow idle time)."""
        samples = list(self.clock_samples)
        before = [s for s in samples if s[0] <= t0]
        inside = [s for s in samples if t0 < s[0] <= t1]
        after = [s for s in samples if s[0] > t1]
        window = before[-1:] + inside + after[:1]
        if not window:
            return {}
        figures = {"clock_source": "tegrastats"}
        for field in ("cpu", "gpu"):
            values = [s[1].get(field + "_mhz") for s in window]
            values = [v for v in values if v is not None]
            if values:
                figures.update([(field + "_mhz_start", values[0]), (field + "_mhz_end", values[-1]),
                                (field + "_mhz_min", min(values))])
        temps = [tegra_temp(s[1].get("temps", {})) for s in window]
        temps = [(c, name) for c, name in temps if c is not None]
        if temps:
            figures.update(temp_c_start=temps[0][0], temp_c_end=temps[-1][0],
                           temp_c_max=max(c for c, _ in temps), temp_source=temps[-1][1])
        return _with_throttled(figures)


def _with_throttled(figures):
    falls = [figures[p + "_mhz_min"] < figures[p + "_mhz_start"] * (1.0 - THROTTLE_DROP)
             for p in ("cpu", "gpu") if p + "_mhz_min" in figures]
    if falls:
        figures["throttled"] = int(any(falls))
    return figures
