"""One owner per device, machine-wide (farm.devices.lock): real lock files, real cgroups, real
processes killed by real signals, a real sshd for a board's lock, and two real `farm submit`
runs with two databases naming one device.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from farm.devices.kinds.cgroup import CgroupDevice, cgroup_runner
from farm.devices.lock import DeviceLock, Owner, held_here
from farm.errors import Busy
from test_reliability import _agent_pids, _farm, _rows, _start, _stop_group, _wait_for

FIRST = Owner("first", "sqlite:////data/first.db", pid=4242, host="lab-pc")


@pytest.fixture
def locks():
    """Locks made by a test, each released after it."""
    made = []

    def make(name: str, *args) -> DeviceLock:
        made.append(DeviceLock(name, *args))
        return made[-1]

    yield make
    for lock in made:
        lock.release()


def _holder(lock: DeviceLock) -> dict:
    return json.loads(Path(lock.path).read_text())


def test_a_second_taker_is_refused_with_the_holder_named_until_it_lets_go(locks, device_names):
    name, = device_names(1)
    first = locks(name)
    first.take(FIRST)
    assert first.held and _holder(first) | {"locker": 0, "since": 0} == {
        "sweep": "first", "database": "sqlite:////data/first.db", "pid": 4242,
        "host": "lab-pc", "locker": 0, "since": 0}
    with pytest.raises(Busy) as refused:
        locks(name).take(Owner("second", "sqlite:////data/second.db"))
    assert refused.value.exit_code == 5
    assert refused.value.message.startswith(
        f"device '{name}' is in use by another farm run: sweep 'first', database "
        "sqlite:////data/first.db, farm pid 4242 on lab-pc (locked on this host since ")
    assert "\n" not in str(refused.value)
    first.release()
    assert not Path(first.path).exists()
    second = locks(name)
    second.take(Owner("second", "sqlite:////data/second.db"))
    assert _holder(second)["sweep"] == "second"


def test_a_look_at_a_lock_names_its_holder_and_never_takes_it(locks, device_names):
    name, = device_names(1)
    assert held_here(name) is None
    first = locks(name)
    first.take(FIRST)
    assert held_here(name)["sweep"] == "first" and held_here(name)["pid"] == 4242
    first.release()
    assert held_here(name) is None
    looking = threading.Event()

    def look():
        while not looking.is_set():
            held_here(name)
    threading.Thread(target=look, daemon=True).start()
    try:
        for _ in range(5):  # a look in a loop never makes a taker see the device busy
            taker = locks(name)
            taker.take(FIRST)
            taker.release()
    finally:
        looking.set()


def test_only_one_of_many_simultaneous_takers_wins(locks, device_names):
    name, = device_names(1)
    takers = [locks(name) for _ in range(8)]
    outcomes = []

    def take(lock):
        try:
            lock.take(Owner(f"s{takers.index(lock)}", "sqlite:///x.db"))
            outcomes.append("held")
        except Busy:
            outcomes.append("busy")

    threads = [threading.Thread(target=take, args=(lock,)) for lock in takers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["busy"] * 7 + ["held"]


def test_a_dead_owners_lock_is_taken_over(locks, device_names):
    name, = device_names(1)
    dead = locks(name)
    dead.take(FIRST)
    path = Path(dead.path)
    os.kill(dead.process.pid, signal.SIGKILL)  # the locker dies, and the kernel drops its lock
    dead.process.wait(timeout=10)
    assert json.loads(path.read_text())["pid"] == 4242  # its file still names it
    heir = locks(name)
    heir.take(Owner("heir", "sqlite:///heir.db"))
    assert heir.previous["sweep"] == "first"
    assert _holder(heir)["sweep"] == "heir" and _holder(heir)["pid"] == os.getpid()


def _device(name: str) -> CgroupDevice:
    return CgroupDevice(name=name, kind="cgroup", memory="256MiB", cpus=1)


def test_a_runner_holds_its_device_from_prepare_to_close(cgroups, device_names):
    name, = device_names(1)
    owner, other = cgroup_runner(_device(name)), cgroup_runner(_device(name))
    try:
        owner.prepare(FIRST)
        folders = owner.container.paths()
        with pytest.raises(Busy, match="sweep 'first'.*farm pid 4242 on lab-pc"):
            other.prepare(Owner("second", "sqlite:///second.db"))
        assert other.container is None and other.lock is None
        other.close()  # the refused runner closes without touching the owner's container
        assert all(Path(folder).is_dir() for folder in folders)
        assert owner.container.limit_bytes() == 256 * 2**20
        lock_file = Path(owner.lock.path)
        owner.close()
        assert not lock_file.exists() and not any(Path(f).exists() for f in folders)
        assert other.prepare(Owner("second", "sqlite:///second.db"))["cgroup"] in ("v1", "v2")
    finally:
        owner.close()
        other.close()


OWNER_THAT_DIES = """
import subprocess, sys, time
from farm.devices.kinds.cgroup import CgroupDevice, cgroup_runner
from farm.devices.lock import Owner
runner = cgroup_runner(CgroupDevice(name=sys.argv[1], kind="cgroup", memory="256MiB"))
runner.prepare(Owner("doomed", "sqlite:///doomed.db"))
sleeper = subprocess.Popen(runner.container.join_command(["sleep", "300"]),
                           start_new_session=True)
while not runner.container.pids():
    time.sleep(0.05)
print(sleeper.pid, flush=True)
time.sleep(300)
"""


def test_an_owner_that_dies_leaves_its_device_empty_and_free(cgroups, locks, device_names):
    """Its agent (here a sleeper in the cgroup, in a session of its own) is killed by the
    locker when the owner's process dies, before the lock is let go, so the next owner never
    finds the cgroup occupied ('in use')."""
    name, = device_names(1)
    doomed = subprocess.Popen([sys.executable, "-c", OWNER_THAT_DIES, name],
                              stdout=subprocess.PIPE, text=True)
    heir = cgroup_runner(_device(name))
    try:
        sleeper = int(doomed.stdout.readline())
        assert _agent_pids(name) == [sleeper]
        with pytest.raises(Busy, match="sweep 'doomed'"):
            heir.prepare(Owner("heir", "sqlite:///heir.db"))
        doomed.kill()
        doomed.wait(timeout=10)
        probe = locks(name)
        _wait_for(lambda: _taken(probe), timeout=30)
        assert not _agent_pids(name)
        assert probe.previous == {}  # the dead owner's locker cleaned up and let go
        probe.release()
        assert heir.prepare(Owner("heir", "sqlite:///heir.db"))["memory_limit_mb"] == 256
    finally:
        doomed.kill()
        doomed.wait(timeout=10)
        heir.close()


def test_a_boards_lock_lives_on_the_board_and_ends_with_its_connection(
        boards, locks, tmp_path, jetson_python):
    """Held by the board's own Python 3.6 over an SSH channel (the stand-in board is this
    machine, so a lock taken here for the same name is the board's own)."""
    from farm.devices import ssh
    from farm.devices.kinds.jetson import JetsonDevice

    board, = boards(1)
    device = JetsonDevice(**board.inventory_entry(tmp_path / "known_hosts", jetson_python))
    target = ssh.resolve(device)
    ssh.pin(target, ssh.fetch_host_key(target))
    connection = ssh.connect(device)
    try:
        remote = locks(device.name, connection, jetson_python)
        remote.take(FIRST)
        locker = _holder(remote)["locker"]  # a process on the board: its own interpreter's
        assert os.path.realpath(f"/proc/{locker}/exe") == os.path.realpath(jetson_python)
        with pytest.raises(Busy, match=f"farm pid 4242 on lab-pc \\(locked on {board.name}"):
            locks(device.name, connection, jetson_python).take(Owner("second", "x"))
        with pytest.raises(Busy, match="locked on this host"):
            locks(device.name).take(Owner("second", "x"))
    finally:
        connection.close()  # the connection gone, the board's locker ends and the lock with it
    heir = locks(device.name)
    _wait_for(lambda: _taken(heir), timeout=30)
    assert heir.previous == {}  # its locker saw the channel close, and let go cleanly


def _taken(lock: DeviceLock) -> bool:
    try:
        lock.take(Owner("heir", "sqlite:///heir.db"))
        return True
    except Busy:
        return False


def test_a_second_farm_with_its_own_database_is_refused_and_the_first_is_untouched(
        cgroups, tmp_path, device_names):
    """The bug this lock fixes: two submits, two databases, one cgroup device."""
    name, = device_names(1)
    runs = {}
    for sweep in ("first", "second"):
        folder = runs[sweep] = tmp_path / sweep
        folder.mkdir()
        (folder / "inventory.yaml").write_text(json.dumps({"devices": [
            {"name": name, "kind": "cgroup", "memory": "1GiB", "cpus": 1}]}))
        (folder / "sweep.yaml").write_text(json.dumps({
            "name": sweep, "devices": [name], "models": ["bert-tiny"],
            "batch_sizes": [1, 2, 4, 8, 16, 32], "seq_lens": [32],
            "measure": {"warmup": 1, "min_iters": 3, "min_seconds": 3.0}}))
    first = _start("submit", "sweep.yaml", "-i", "inventory.yaml", cwd=runs["first"])
    try:
        _wait_for(lambda: _rows(runs["first"], "select 1 from jobs where status = 'running' "
                                               "and phase = 'timing'"), process=first)
        second = _farm("submit", "sweep.yaml", "-i", "inventory.yaml", cwd=runs["second"])
        stdout, stderr = first.communicate(timeout=300)
    finally:
        _stop_group(first)
    print(second.stderr, stdout, sep="\n")  # shown with -s: the refusal and the first's table
    assert second.returncode == 5, second.stdout + second.stderr
    assert second.stderr.splitlines()[0] == (
        f"error: device '{name}' is in use by another farm run: sweep 'first', database "
        f"sqlite:///{runs['first'] / 'farm.db'}, farm pid {first.pid} on "
        f"{socket.gethostname()} (locked on this host since "
        + second.stderr.split("locked on this host since ")[1].splitlines()[0])
    assert not _rows(runs["second"], "select * from sweeps")
    assert [r["outcome"] for r in _rows(runs["second"], "select * from runs")] == ["refused"]
    assert [d["state"] for d in _rows(runs["second"], "select * from devices")] == ["idle"]

    assert first.returncode == 0, stdout + stderr
    jobs = _rows(runs["first"], "select * from jobs")
    assert len(jobs) == 6 and {j["status"] for j in jobs} == {"done"}
    assert len(_rows(runs["first"], "select * from attempts")) == 6  # not one retry
    device, = _rows(runs["first"], "select * from devices")
    assert device["state"] == "idle" and device["quarantined_at"] is None
    peaks = [r["container_peak_mb"] for r in _rows(runs["first"], "select * from v_results")]
    assert all(0 < peak < 450 for peak in peaks), peaks  # one bert-tiny agent, not two
    assert not _agent_pids(name)
