"""Board and CPU energy over a timed window, from counters the device itself keeps.

Sources, in order of preference:
  tegrastats  Jetson boards: the board's input rail, `POM_5V_IN cur/avg` (Nano) or `VDD_IN`
              (Xavier, Orin), in mW, sampled every SAMPLE_MS; energy = mean power x window.
  rapl        Intel/AMD RAPL package energy counters (/sys/class/powercap), where readable.
No source, no figure: the agent reports null rather than an estimate.
"""
import collections
import os
import re
import shutil
import subprocess
import threading
import time

from agents.conditions import parse_tegrastats_clocks

SAMPLE_MS = 100
_RAIL = re.compile(r"\b(POM_5V_IN|VDD_IN) (\d+)(?:mW)?/(\d+)(?:mW)?")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
POWERCAP = "/sys/class/powercap"


def parse_tegrastats(line):
    """(rail, current mW, RAM used MB) from one tegrastats line; None where absent."""
    rail = _RAIL.search(line)
    ram = _RAM.search(line)
    return (rail.group(1) if rail else None, int(rail.group(2)) if rail else None,
            int(ram.group(1)) if ram else None)


class Tegrastats(object):
    def __init__(self, executable):
        self.samples = collections.deque(maxlen=20000)  # (monotonic time, mW, RAM used MB)
        # (monotonic time, clocks and temperatures: agents.conditions reads them)
        self.clock_samples = collections.deque(maxlen=20000)
        self.rail = None
        self.lock = threading.Lock()
        self.process = subprocess.Popen([executable, "--interval", str(SAMPLE_MS)],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        universal_newlines=True)
        reader = threading.Thread(target=self._read)
        reader.daemon = True
        reader.start()

    @property
    def source(self):
        return "tegrastats:%s" % (self.rail or "?")

    def _read(self):
        for line in self.process.stdout:
            rail, mw, ram = parse_tegrastats(line)
            self.clock_samples.append((time.monotonic(), parse_tegrastats_clocks(line)))
            if mw is not None:
                with self.lock:
                    self.rail = rail
                    self.samples.append((time.monotonic(), mw, ram))

    def window(self, start, end):
        """Mean power (mW) and peak RAM (MB) over [start, end], or None without a sample in it."""
        with self.lock:
            inside = [s for s in self.samples if start <= s[0] <= end]
        if not inside:
            return None
        rams = [s[2] for s in inside if s[2] is not None]
        return {"power_mw": sum(s[1] for s in inside) / float(len(inside)),
                "board_ram_peak_mb": max(rams) if rams else None, "samples": len(inside)}

    def close(self):
        self.process.kill()


class Rapl(object):
    source = "rapl:package"

    def __init__(self, domains):
        self.domains = domains  # [(energy_uj path, max range uj)]
        self.marks = {}

    def _read(self):
        return [int(open(path).read()) for path, _ in self.domains]

    def mark(self, at):
        self.marks[at] = (time.monotonic(), self._read())

    def power_between(self, first, second):
        (t0, e0), (t1, e1) = self.marks[first], self.marks[second]
        total = 0
        for (_, wrap), a, b in zip(self.domains, e0, e1):
            total += b - a if b >= a else b + wrap - a  # the counter wraps at its max range
        return total / 1000.0 / (t1 - t0) if t1 > t0 else None  # uJ/s = uW; /1000 = mW

    def close(self):
        pass


def _rapl_domains():
    found = []
    try:
        names = sorted(os.listdir(POWERCAP))
    except OSError:
        return found
    for name in names:
        base = os.path.join(POWERCAP, name)
        if name.count(":") != 1:  # package domains only (intel-rapl:0), not sub-zones
            continue
        try:
            with open(os.path.join(base, "energy_uj")) as f:
                int(f.read())
            with open(os.path.join(base, "max_energy_range_uj")) as f:
                wrap = int(f.read())
        except (IOError, OSError, ValueError):
            continue
        found.append((os.path.join(base, "energy_uj"), wrap))
    return found


def open_meter():
    """The best energy source this device has, or None."""
    tegrastats = shutil.which("tegrastats")
    if tegrastats:
        return Tegrastats(tegrastats)
    domains = _rapl_domains()
    return Rapl(domains) if domains else None


def measure_window(meter, run_window, idle_s):
    """Run `run_window()` -> (samples processed, window seconds, payload) and measure its energy.

    Returns (payload, figures). The idle power is read over `idle_s` just before the window,
    with the agent doing nothing, so that net energy (above idle) can be derived.
    """
    if meter is None:
        return run_window()[2], {}
    extra = {}
    if isinstance(meter, Rapl):
        meter.mark("idle")
        time.sleep(idle_s)
        meter.mark("start")
        samples, window_s, payload = run_window()
        meter.mark("end")
        idle, power = meter.power_between("idle", "start"), meter.power_between("start", "end")
    else:
        idle_start = time.monotonic()
        time.sleep(idle_s)
        start = time.monotonic()
        samples, window_s, payload = run_window()
        end = time.monotonic()
        time.sleep(SAMPLE_MS / 1000.0 * 1.5)  # let the sample that closes the window arrive
        idle_window, window = meter.window(idle_start, start), meter.window(start, end)
        idle = idle_window["power_mw"] if idle_window else None
        power = window["power_mw"] if window else None
        extra = {"board_ram_peak_mb": window["board_ram_peak_mb"] if window else None,
                 "power_samples": window["samples"] if window else 0}
    figures = {"energy_source": meter.source, "idle_power_mw": idle, "avg_power_mw": power}
    if power is not None and samples:
        figures["energy_mj"] = power * window_s / samples  # mW x s = mJ, per sample processed
    figures.update(extra)
    return payload, figures
