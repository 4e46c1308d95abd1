"""One owner per device, machine-wide: a lock that lives with the device, on the host that holds
its cgroup (this one, or a board over SSH), whatever database each farm writes to.

Why not the database's lease (farm.store.runs): two farms with two databases never see each
other's. Why not the cgroup's process list: it is read, then the cgroup made, and two farms can
interleave the two (both then ran in one cgroup, each killed the other's agent, and the peak
of one job was stored as the sum of two).

The lock is flock(2) on <lock dir>/farm-devices/<device>.lock on the device's host, held by a
small locker process started there (a child here; a command on its own SSH channel on a board)
for as long as a runner owns the device. The locker ends when its stdin closes: at release(),
or when the process or the connection that started it dies; the kernel then drops the lock. So a
dead owner's lock is free at once, with no guess about liveness, and the next owner overwrites
the file, which names its owner (farm's pid and host, sweep, database) for whoever is refused.
Before it ends, the locker kills what its owner left in the device's cgroups (watch()), so the
next owner never finds them occupied.
"""
from __future__ import annotations

import json
import os
import queue
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

from farm.errors import Busy, DeviceError
from farm.hosts import LOCAL, Host, Process

ANSWER_S = 60.0  # the locker's interpreter starting (on a board: a slow SD card)
RELEASE_S = 30.0  # the locker emptying the device's cgroups, then unlocking

# Runs on the device's host with the agent's interpreter: Python 3.6 and its stdlib only.
LOCKER = r'''
import fcntl, json, os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # farm releases the device once it has cleaned up
name, owner = sys.argv[1], json.loads(sys.argv[2])
folder = os.path.join("/run/lock" if os.path.isdir("/run/lock") else "/tmp", "farm-devices")
try:
    os.mkdir(folder)
    os.chmod(folder, 0o1777)  # like /tmp: any user's farm may lock a device here
except FileExistsError:
    pass
path = os.path.join(folder, name + ".lock")

def holder(fd):
    os.lseek(fd, 0, 0)
    text = os.read(fd, 65536).decode(errors="replace")
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return {"unreadable": text[:200]}

while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        seen = {}
        for _ in range(40):  # its holder names itself right after locking
            seen = holder(fd)
            if seen:
                break
            time.sleep(0.05)
        print(json.dumps({"busy": seen, "path": path}))
        sys.exit(0)
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            break
    except FileNotFoundError:
        pass
    os.close(fd)  # its last owner removed it while we opened it: lock the file there now
try:
    os.fchmod(fd, 0o666)
except OSError:
    pass
previous = holder(fd)
owner.update(locker=os.getpid(), since=time.time())
os.ftruncate(fd, 0)
os.lseek(fd, 0, 0)
os.write(fd, json.dumps(owner).encode())
print(json.dumps({"held": path, "previous": previous}))
sys.stdout.flush()
cgroups = [line.strip() for line in sys.stdin if line.strip()]

def left(folder):  # the cgroup's processes and its leaves' (v2: each agent has its own)
    pids = []
    for cgroup, _, _ in os.walk(folder):
        try:
            with open(os.path.join(cgroup, "cgroup.procs")) as f:
                pids += [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            pass
    return pids

deadline = time.time() + 20
while time.time() < deadline and any(left(c) for c in cgroups):
    for pid in [p for c in cgroups for p in left(c)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.1)
os.unlink(path)
'''


@dataclass(frozen=True)
class Owner:
    """Who holds a device: the farm that drives it, as a refused farm's message names it."""
    sweep: str | None = None
    database: str | None = None
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)

    @classmethod
    def of(cls, sweep: str, database_url: str) -> Owner:
        from sqlalchemy.engine import make_url
        try:  # a shared PostgreSQL's password must not land in a file others read
            database = make_url(database_url).render_as_string(hide_password=True)
        except Exception:
            database = database_url
        return cls(sweep, database)


class DeviceLock:
    """The lock of one device, on the host that holds it. take() raises Busy when another
    farm holds it; release() lets it go."""

    def __init__(self, device: str, host: Host = LOCAL, python: str | None = None):
        self.device, self.host, self.python = device, host, python or sys.executable
        self.process: Process | None = None
        self.path: str | None = None
        self.previous: dict = {}  # what a dead owner's file said, when one was taken over

    @property
    def held(self) -> bool:
        return self.process is not None

    def take(self, owner: Owner) -> None:
        if self.held:
            return
        try:
            process = self.host.start([self.python, "-c", LOCKER, self.device,
                                       json.dumps(asdict(owner))])
        except OSError as error:  # no such interpreter here (a board's is started by its shell)
            raise self._cannot(error.strerror or str(error)) from None
        answer = self._answer(process)
        if "busy" in answer:
            _end(process)
            raise Busy(self._refusal(answer["busy"]),
                       f"wait for that run to end, or leave {self.device} out of the sweep; the "
                       f"lock is {answer.get('path')} on {self.host.name}")
        self.process, self.path = process, answer["held"]
        self.previous = answer.get("previous") or {}

    def watch(self, cgroups: list[str]) -> None:
        """Cgroups the locker empties if this owner dies without removing them."""
        if self.process is None:
            return
        try:
            for folder in cgroups:
                self.process.stdin.write(folder + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError) as error:
            raise DeviceError(f"lost the lock of device {self.device!r} on {self.host.name}: "
                              f"{error}") from None

    def release(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        _end(process)

    def _answer(self, process: Process) -> dict:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=ANSWER_S)
        except queue.Empty:
            line = ""
        try:
            answer = json.loads(line)
            if isinstance(answer, dict) and ("busy" in answer or "held" in answer):
                return answer
        except ValueError:
            pass
        process.kill()
        tail = " | ".join(_read_tail(process).splitlines()[-3:]) or "no answer"
        _end(process)
        raise self._cannot(tail)

    def _cannot(self, why: str) -> DeviceError:
        return DeviceError(f"cannot lock device {self.device!r} on {self.host.name} with "
                           f"{self.python}: {why}",
                           "the lock needs a Python 3.6+ there (python: in the inventory) and "
                           "a writable /run/lock or /tmp")

    def _refusal(self, holder: dict) -> str:
        return refusal(self.device, self.host.name, holder)


def refusal(device: str, host: str, holder: dict) -> str:
    if not holder.get("pid"):
        return (f"device {device!r} is in use by another farm run (on {host}; its lock names no "
                "owner yet)")
    since = time.strftime("%H:%M:%S UTC", time.gmtime(holder["since"])) \
        if holder.get("since") else "?"
    return (f"device {device!r} is in use by another farm run: sweep {holder.get('sweep')!r}, "
            f"database {holder.get('database')}, farm pid {holder['pid']} on "
            f"{holder.get('host')} (locked on {host} since {since})")


def lock_path(device: str) -> str:
    """Where the locker (LOCKER) keeps a device's lock on this host."""
    folder = "/run/lock" if os.path.isdir("/run/lock") else "/tmp"
    return os.path.join(folder, "farm-devices", device + ".lock")


def held_here(device: str) -> dict | None:
    """The owner named by `device`'s lock on this host while a locker holds it, else None.

    A look that never takes the lock (it reads /proc/locks): trying the lock, however briefly,
    could refuse a farm taking it at that moment. Used before Ray starts, so that a second farm
    is refused before its start-up takes CPU from the jobs the first is timing."""
    path = lock_path(device)
    try:
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())
            text = f.read(65536).decode(errors="replace")
        with open("/proc/locks") as f:
            locks = f.read().splitlines()
    except OSError:
        return None
    ident = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    if not any(line.split()[1:2] == ["FLOCK"] and ident in line.split() for line in locks):
        return None
    try:
        holder = json.loads(text) if text.strip() else {}
    except ValueError:
        holder = {}
    return holder if isinstance(holder, dict) else {}


def _end(process: Process) -> None:
    """Close the locker's stdin (its cue: empty the cgroups, unlock, end) and wait for it."""
    try:
        process.stdin.close()
        process.wait(timeout=RELEASE_S)
    except Exception:  # gone already, or a board out of reach: its lock ends with it
        try:
            process.kill()
        except Exception:
            pass
    for pipe in (process.stdout, process.stderr):
        try:
            pipe.close()
        except Exception:
            pass


def _read_tail(process: Process) -> str:
    try:
        process.wait(timeout=5)
        return process.stderr.read()[-2000:]
    except Exception:
        return ""
