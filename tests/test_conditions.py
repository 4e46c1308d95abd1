"""What a timed window ran under (agents/conditions.py) and devices pinned to cores of their own
(farm/devices/kinds/cgroup.py place_on_cores, the cpuset in farm/cgroups): other processes' CPU
time measured on the agent's cores, a hog on them flagged, clocks and heat from the fake
tegrastats' exact lines, and a warning before anything runs when devices ask for more CPUs than
the host has."""
from __future__ import annotations

import collections
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from agents import conditions
from conftest import REPO
from farm.api import _placed
from farm.cgroups import open_container, parse_cpu_list
from farm.devices.kinds.cgroup import CgroupDevice, place_on_cores

FAKES = REPO / "tests" / "fakes"
HOST_CPUS = sorted(os.sched_getaffinity(0))
two_cpus = pytest.mark.skipif(len(HOST_CPUS) < 2, reason="needs 2 CPUs to keep one quiet")


def test_cpu_lists_read_and_written_as_the_kernel_does():
    assert conditions.cpu_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert parse_cpu_list("0-2,5,7-8\n".strip()) == {0, 1, 2, 5, 7, 8}
    assert conditions.cpu_list([3]) == "3"


def test_busy_ticks_count_every_busy_field_of_the_cpus_asked():
    stat = ("cpu  10 20 30 40 50 60 70 80 0 0\n"
            "cpu0 1 2 3 400 500 6 7 8 9 9\n"  # user nice system idle iowait irq softirq steal
            "cpu1 100 0 0 0 0 0 0 0 0 0\nintr 5\n")
    assert conditions.busy_ticks([0], stat) == 1 + 2 + 3 + 6 + 7 + 8
    assert conditions.busy_ticks([0, 1], stat) == 27 + 100


def test_cpuinfo_clock_is_the_mean_of_the_agents_cpus():
    text = "processor\t: 0\ncpu MHz\t\t: 1000.0\n\nprocessor\t: 1\ncpu MHz\t\t: 3000.0\n"
    assert conditions.cpuinfo_mhz([1], text) == 3000.0
    assert conditions.cpuinfo_mhz([0, 1], text) == 2000.0


def _tegrastats_line(env=None) -> str:
    """One line of the fake tegrastats, which prints the Nano's own format."""
    process = subprocess.Popen([str(FAKES / "tegrastats"), "--interval", "100"],
                               stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    try:
        return process.stdout.readline()
    finally:
        process.kill()
        process.wait()


def test_tegrastats_clocks_and_temperatures(tmp_path):
    clocks = conditions.parse_tegrastats_clocks(_tegrastats_line())
    assert clocks["cpu_mhz"] == 1479 and clocks["gpu_mhz"] == 921
    assert conditions.tegra_temp(clocks["temps"]) == (33.5, "tegrastats CPU")
    # The Nano's PMIC sensor reads a fixed 100C: never taken for the board's temperature.
    assert conditions.tegra_temp({"PMIC": 100.0, "GPU": 31.0}) == (31.0, "tegrastats GPU")
    # Offline cores print "off": the clock is the online cores' mean.
    line = _tegrastats_line().replace("CPU [30%@1479,20%@1479,", "CPU [30%@1479,off,")
    assert conditions.parse_tegrastats_clocks(line)["cpu_mhz"] == 1479
    (tmp_path / "mhz").write_text("921")
    slowed = _tegrastats_line({"FAKE_CPU_MHZ_FILE": str(tmp_path / "mhz")})
    assert conditions.parse_tegrastats_clocks(slowed)["cpu_mhz"] == 921


class _Board:
    """tegrastats' parsed samples as the agent's meter keeps them (agents.energy.Tegrastats)."""

    def __init__(self, cpu_clocks, start):
        self.clock_samples = collections.deque(
            (start + 0.1 * i, {"cpu_mhz": mhz, "gpu_mhz": 921.0, "temps": {"CPU": 30.0 + i}})
            for i, mhz in enumerate(cpu_clocks))


@pytest.mark.parametrize("clocks, throttled", [
    ([1479, 1479, 1479, 1479, 1479], 0),
    ([1479, 1479, 1224, 1479, 1479], 1),  # a fall inside the window, though it recovered
    ([1479, 1479, 1450, 1479, 1479], 0),  # 2%: the governor's wobble, not throttling
])
def test_a_clock_that_fell_in_the_window_is_throttled(clocks, throttled):
    window = conditions.Window(_Board(clocks, time.monotonic() - 0.05))
    window.t0 = time.monotonic()
    figures = window._tegrastats(window.t0, window.t0 + 0.35)
    assert figures["throttled"] == throttled
    assert figures["cpu_mhz_start"] == 1479 and figures["cpu_mhz_min"] == min(clocks)
    assert (figures["gpu_mhz_start"], figures["gpu_mhz_min"]) == (921, 921)
    assert figures["temp_c_start"] == 30.0 and figures["temp_c_max"] == 34.0
    assert figures["clock_source"] == "tegrastats" and figures["temp_source"] == "tegrastats CPU"


_WINDOW = """
import json, os, sys, time
sys.path.insert(0, {repo!r})
os.sched_setaffinity(0, {{0}})
from agents import conditions
window = conditions.Window().start()
end = time.monotonic() + 1.5
while time.monotonic() < end:
    pass
print(json.dumps(window.stop()))
"""


def _hog(cpu: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{cpu}}})"
                             "\nwhile True: pass"])


def _window_on_cpu0(hog_cpu: int | None) -> dict:
    import json
    hog = _hog(hog_cpu) if hog_cpu is not None else None
    try:
        done = subprocess.run([sys.executable, "-c", _WINDOW.format(repo=str(REPO))],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()


@two_cpus
def test_a_hog_on_the_agents_core_is_measured():
    """Per-CPU attribution (a hog on another core is not counted) is test_busy_ticks' and
    bench/interference.py's: here the suite's other work (the v2 kernel's tests run beside it)
    lands on either core, and a hog on core 1 pushes it onto core 0, rightly counted."""
    same = _window_on_cpu0(0)
    assert same["cpu_list"] == "0"
    # The hog and the busy loop share core 0 about evenly.
    assert same["outside_cpu_share"] > 0.3 and same["host_busy"] == 1
    assert same["outside_cpu_s"] == pytest.approx(same["outside_cpu_share"] * 1.5, rel=0.05)
    assert same["load_avg_1m"] is not None


def _cgroup_device(name, cpus=1.0, **extra):
    return CgroupDevice(name=name, kind="cgroup", memory="512MiB", cpus=cpus, **extra)


@two_cpus
def test_devices_with_whole_cpus_get_cores_of_their_own_and_fractions_the_rest():
    placed, notes = place_on_cores([_cgroup_device("a"), _cgroup_device("b", 0.5)])
    assert notes == [] and placed[0].cores == (HOST_CPUS[0],)
    assert placed[1].cores == tuple(HOST_CPUS[1:])
    chosen, _ = place_on_cores([_cgroup_device("c", cores=[HOST_CPUS[0]]), _cgroup_device("d")])
    assert chosen[0].cores == (HOST_CPUS[0],) and chosen[1].cores == (HOST_CPUS[1],)


class _Told:
    def __init__(self):
        self.warnings = []

    def warning(self, message, fix):
        self.warnings.append((message, fix))


def test_more_cpus_than_the_host_has_is_said_and_nothing_is_pinned():
    devices = [_cgroup_device(f"x{i}") for i in range(len(HOST_CPUS) + 1)]
    told = _Told()
    placed = _placed(devices, told)
    assert [d.cores for d in placed] == [None] * len(devices)
    (message, fix), = told.warnings
    names = ", ".join(d.name for d in devices)
    assert message.startswith(f"devices {names} ask for {len(devices)} CPUs and this host has "
                              f"{len(HOST_CPUS)}: they share cores")
    assert "outside CPU" in message and "fewer cpus" in fix


@two_cpus
def test_a_core_another_farms_device_is_pinned_to_is_not_given_again(cgroups):
    other = open_container(f"farm-test-held-{os.getpid()}", 256 * 2**20, 1.0, cores=(HOST_CPUS[0],))
    sleeper = subprocess.Popen(other.join_command(["sleep", "60"]))
    try:
        deadline = time.monotonic() + 10
        while not other.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert other.cores == str(HOST_CPUS[0])
        placed, notes = place_on_cores([_cgroup_device("mine")])
        assert notes == [] and placed[0].cores == (HOST_CPUS[1],)
        crowded, notes = place_on_cores([_cgroup_device("m1"), _cgroup_device("m2")])
        assert [d.cores for d in crowded] == [None, None]
        assert "pinned to another farm run's devices" in notes[0][0]
    finally:
        sleeper.kill()
        sleeper.wait()
        other.remove()


@two_cpus
def test_a_job_beside_a_hog_on_its_core_is_flagged_with_the_interference(
        cgroups, write_yaml, db_url, device_names):
    from farm.api import submit

    name = device_names(1)[0]
    inventory = write_yaml("inventory.yaml", {"devices": [
        {"name": name, "kind": "cgroup", "memory": "1GiB", "cpus": 1, "cores": [HOST_CPUS[0]]}]})
    sweep = write_yaml("sweep.yaml", {
        "name": "hog", "models": ["bert-tiny"], "batch_sizes": [1], "seq_lens": [32],
        "measure": {"warmup": 2, "min_iters": 20, "min_seconds": 1.5}})
    hog = _hog(HOST_CPUS[0])
    try:
        assert submit(sweep, inventory, db=db_url).counts == {"done": 1}
    finally:
        hog.kill()
        hog.wait()
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        db.row_factory = sqlite3.Row
        row = dict(db.execute("SELECT * FROM v_results").fetchone())
    assert row["cpu_list"] == str(HOST_CPUS[0])
    assert row["host_busy"] == 1 and row["outside_cpu_share"] > 0.3
    assert row["outside_cpu_s"] > 0.3 * row["window_s"]
