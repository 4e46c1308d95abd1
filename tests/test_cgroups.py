"""Real cgroups: the limit holds, an OOM kill is seen, the peak resets, nothing is left behind."""
import subprocess
import sys
import time

import pytest

from farm.cgroups import open_container
from farm.errors import ContainerError

ALLOCATE = ("import time; x = bytearray({mib} * 2**20); x[::4096] = b'1' * len(x[::4096]); "
            "time.sleep({hold})")


def _run_inside(container, mib, hold=0.0):
    container.new_agent()
    argv = container.join_command([sys.executable, "-c", ALLOCATE.format(mib=mib, hold=hold)])
    return subprocess.run(argv, capture_output=True, timeout=60)


@pytest.fixture
def container(cgroups, device_names):
    made = open_container(device_names(1)[0], 160 * 2**20, 1)
    yield made
    made.remove()


def test_limit_and_oom_kill_are_seen(container):
    assert container.limit_bytes() == 160 * 2**20
    before = container.oom_kills()
    watch = container.watch_peak()
    ok = _run_inside(container, 40)
    assert ok.returncode == 0, ok.stderr
    killed = _run_inside(container, 400)
    assert killed.returncode == -9
    assert container.oom_kills() == before + 1
    assert watch.read()[0] >= 150 * 2**20
    watch.close()


def test_peak_resets_to_what_is_live(container):
    first = container.watch_peak()
    _run_inside(container, 100)
    assert first.read()[0] >= 100 * 2**20
    first.close()
    second = container.watch_peak()
    _run_inside(container, 10)
    peak, method = second.read()
    assert peak < 80 * 2**20
    assert method == {"v1": "reset"}.get(container.version, method)
    second.close()


def test_a_device_in_use_is_refused_and_removal_cleans_up(cgroups, device_names):
    name = device_names(1)[0]
    first = open_container(name, 64 * 2**20, None)
    argv = first.join_command([sys.executable, "-c", "import time; time.sleep(30)"])
    sleeper = subprocess.Popen(argv)
    try:
        for _ in range(50):
            if first.pids():
                break
            time.sleep(0.1)
        assert first.pids() == [sleeper.pid]
        with pytest.raises(ContainerError, match="in use"):
            open_container(name, 64 * 2**20, None)
    finally:
        first.remove()
        sleeper.wait(timeout=10)
    assert sleeper.returncode == -9
    assert not any(  # the device's cgroup is gone
        (d / name).exists() for d in _farm_parents())


def _farm_parents():
    from farm.cgroups import own_cgroup_paths
    from conftest import CGROUP_ROOT
    own = own_cgroup_paths().get("memory", "/").lstrip("/")
    return [CGROUP_ROOT / "farm", CGROUP_ROOT / "memory" / own / "farm",
            CGROUP_ROOT / "cpu" / "farm"]


def test_an_agent_killed_by_the_oom_killer_before_its_first_job_makes_that_job_oom(
        cgroups, device_names):
    """A device's agent starts when the device is prepared and imports torch at once; where the
    kernel kills it for memory before any job has come, the first job still ends `oom`, not as
    an agent that crashed or was killed from outside."""
    from conftest import QUICK
    from farm.devices.kinds.cgroup import CgroupDevice, cgroup_runner
    from farm.devices.lock import Owner
    from farm.results import Status

    name, = device_names(1)
    runner = cgroup_runner(CgroupDevice(name=name, kind="cgroup", memory="64MiB", cpus=1))
    try:
        runner.prepare(Owner("warm", "sqlite:///warm.db"))
        runner.warm()
        assert runner.session.process.wait(timeout=120) != 0  # torch cannot fit in 64 MiB
        assert runner.container.oom_kills() >= 1
        job = {"key": "k", "model": {"name": "bert-tiny"}, "variant": "fp32",
               "task": "synthetic", "batch_size": 1, "seq_len": 8, "seq_lens": [8],
               "measure": QUICK, "timeout_s": 120}
        outcome = runner.run(job, lambda event: None)
        assert outcome["status"] == Status.OOM, outcome
        assert "OOM killer" in outcome["error"]
    finally:
        runner.close()
