"""cgroup v2: one unified hierarchy (most users' machines).

Layout: <base>/farm/<device> holds the device's limits; each agent process runs in a fresh leaf
below it, <device>/agent-<n>, made just before the agent starts. The leaf is what makes a peak
right on every kernel: its memory.peak starts at zero with the agent (see PeakWatch).

<base> is the root of the hierarchy when farm may write there (root), else the cgroup that farm
runs in, delegated to its user (systemd-run --user --scope -p Delegate=yes, or a subtree an
administrator chowned): v2's "no internal processes" rule lets a cgroup enable controllers for
its children only while it holds no process itself, so farm first moves its own processes into
a leaf of their own, <base>/farm-controller.
"""
from __future__ import annotations

import errno
import threading
import time
from collections import deque

from farm.cgroups import (CGROUP_ROOT, Path, PeakWatch, cpu_list, join_command, make_dir,
                          own_cgroup_paths, read_int, read_keyed, read_pids, read_pids_below,
                          remove_dir, write)
from farm.errors import ContainerError
from farm.hosts import Host

CPU_PERIOD_US = 100_000
CONTROLLER_LEAF = "farm-controller"
SAMPLE_S = 0.002  # memory.current, read this often where the peak cannot be reset
# A job thrashes at its limit when, over the last STALL_WINDOW_S, it hit the limit, its
# processes all stalled on memory (PSI "full") for at least STALL_SHARE of the time, and they
# computed (user CPU time) for at most WORK_SHARE of it: reclaim keeps evicting the pages it
# needs (its own code, its weights' page cache), so the kernel never OOM-kills it and it would
# run into the job's timeout instead. bert-large loading in 512 MiB on Linux 6.1: full stalls
# 41-58% of the time, user time 0.0 s. The work share keeps a streamed model, which reads its
# layers through a page cache at the limit but computes most of the time, from being one.
STALL_WINDOW_S = 10.0
STALL_SHARE = 0.25
WORK_SHARE = 0.25


def _permission(error: ContainerError) -> bool:
    """Refused for want of rights (EACCES or EPERM: both are PermissionError), not for a fault."""
    return isinstance(error.__context__, PermissionError)


def delegation_hint(cpus: bool) -> str:
    controllers = "memory cpu" if cpus else "memory"
    return ("run farm as root, or inside a cgroup delegated to you: "
            "systemd-run --user --scope -p Delegate=yes farm submit ... "
            f"(your user's delegated controllers must include {controllers}: "
            "cat /sys/fs/cgroup/user.slice/user-$(id -u).slice/cgroup.controllers)")


class V2Container:
    version = "v2"

    def __init__(self, host: Host, name: str, path: Path, limit: int):
        self.host, self.name, self.path, self._limit = host, name, path, limit
        self.cores: str | None = None
        self.leaf: Path | None = None
        self._agents = 0
        self._can_reset: bool | None = None  # memory.peak takes a write (Linux 6.12+)
        self._stalls: deque = deque()  # (time, full stall µs, limit hits, user CPU µs)
        self._max_events: int | None = None  # limit hits when the window (load, job) began
        self._limit_hit_at: float | None = None

    @classmethod
    def create(cls, host: Host, name: str, memory_bytes: int, cpus: float | None,
               cores: tuple[int, ...] | None = None) -> V2Container:
        # Pinned only where the kernel has cpusets (CONFIG_CPUSETS needs SMP; a delegated
        # subtree often lacks the controller): container.cores says whether it is.
        pin = bool(cores) and "cpuset" in _controllers(host, CGROUP_ROOT)
        base = farm_base(host, name, cpus is not None, pin)
        pin = pin and "cpuset" in _controllers(host, base)
        path = base / name
        busy = read_pids_below(host, path)
        if busy:
            raise ContainerError(
                f"device {name!r} is in use: its cgroup {path} on {host.name} holds processes "
                f"{busy}", "another farm run is using this device; wait for it or stop it")
        for leaf in _leaves(host, path):  # an idle leftover's empty leaves
            remove_dir(host, leaf, tidy_parent=False)
        make_dir(host, path, name)
        wanted = "+memory +cpu" if cpus is not None else "+memory"
        write(host, path / "cgroup.subtree_control", wanted, name)
        write(host, path / "memory.max", str(memory_bytes), name)
        if pin:
            write(host, path / "cpuset.cpus", cpu_list(cores), name)
        if host.exists(str(path / "memory.swap.max")):
            write(host, path / "memory.swap.max", "0", name)
        if cpus is not None:
            write(host, path / "cpu.max", f"{int(cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}", name)
        if not host.exists(str(path / "memory.peak")):
            raise ContainerError(
                f"{path}/memory.peak is missing on {host.name} (Linux 5.19 or newer has it)",
                "upgrade the kernel, or use kind: local")
        container = cls(host, name, path, read_int(host, path / "memory.max"))
        container.cores = cpu_list(cores) if pin else None
        return container

    def new_agent(self) -> None:
        """A fresh leaf for the agent about to start (the last one's, empty by now, goes)."""
        if self.leaf is not None:
            remove_dir(self.host, self.leaf, tidy_parent=False)
        self._agents += 1
        self.leaf = self.path / f"agent-{self._agents}"
        make_dir(self.host, self.leaf, self.name)
        # One OOM kill takes the whole agent (its threads' helpers too), never half of it.
        if self.host.exists(str(self.leaf / "memory.oom.group")):
            write(self.host, self.leaf / "memory.oom.group", "1", self.name)

    def join_command(self, argv: list[str]) -> list[str]:
        if self.leaf is None:
            self.new_agent()
        return join_command([self.leaf / "cgroup.procs"], argv)

    def watch_peak(self) -> PeakWatch:
        if self.leaf is None:
            self.new_agent()
        self._stalls.clear()  # thrashing() judges each load and job on its own
        self._max_events = self._limit_hit_at = None
        if self._can_reset is not False:
            watch = _ResetPeak.start(self.host, self.leaf)
            self._can_reset = watch is not None
            if watch is not None:
                return watch
        return _FreshOrSampledPeak(self.host, self.leaf)

    def limit_bytes(self) -> int:
        return self._limit

    def memory_split(self) -> dict[str, int] | None:
        stat = read_keyed(self.host, self.path / "memory.stat")
        if "anon" not in stat:
            return None
        kernel = stat.get("kernel")  # Linux 5.18+; before it, the sum of its parts
        if kernel is None:
            kernel = sum(stat.get(k, 0) for k in ("kernel_stack", "pagetables", "percpu",
                                                  "sock", "slab", "sec_pagetables"))
        return {"anon": stat["anon"], "kernel": kernel, "file": stat.get("file", 0)}

    def oom_kills(self) -> int:
        # memory.events counts the subtree's events (the limit is on this cgroup, the agent in
        # a leaf below it).
        return read_keyed(self.host, self.path / "memory.events").get("oom_kill", 0)

    def thrashing(self) -> str | None:
        """Why the agent is stalled at the limit rather than running, or None. Call it every
        second or so while a job runs; it needs STALL_WINDOW_S of readings to decide."""
        now = time.monotonic()
        pressure = _full_stall_us(self.host, self.path / "memory.pressure")
        if pressure is None:
            return None  # no PSI in this kernel (CONFIG_PSI off, or booted psi=0)
        events = read_keyed(self.host, self.path / "memory.events")
        user_us = read_keyed(self.host, self.path / "cpu.stat").get("user_usec", 0)
        if self._max_events is None:
            self._max_events = events.get("max", 0)
        elif self._limit_hit_at is None and events.get("max", 0) > self._max_events:
            self._limit_hit_at = now
        self._stalls.append((now, pressure, events.get("max", 0), user_us))
        # The window starts at the latest reading at least STALL_WINDOW_S old.
        while len(self._stalls) > 1 and now - self._stalls[1][0] >= STALL_WINDOW_S:
            self._stalls.popleft()
        start = self._stalls[0]
        span = now - start[0]
        if span < STALL_WINDOW_S:
            return None
        stalled = (pressure - start[1]) / 1e6
        hits = events.get("max", 0) - start[2]
        worked = (user_us - start[3]) / 1e6
        if stalled >= STALL_SHARE * span and worked <= WORK_SHARE * span and hits > 0:
            since = f" since it first reached it {now - self._limit_hit_at:.1f} s ago" \
                if self._limit_hit_at is not None else ""
            return (f"thrashing at the {self._limit / 2**20:.0f} MiB limit: its processes were "
                    f"stalled on memory for {stalled:.1f} s of the last {span:.1f} s "
                    f"(memory.pressure) and computed for {worked:.1f} s (cpu.stat), the limit "
                    f"was hit {hits} times (memory.events max){since}, and the kernel never "
                    "OOM-killed it")
        return None

    def pids(self) -> list[int]:
        return read_pids_below(self.host, self.path)

    def paths(self) -> list[str]:
        return [str(self.path)]

    def kill(self) -> None:
        kill_file = self.path / "cgroup.kill"  # Linux 5.14+: kills the whole subtree at once
        if self.host.exists(str(kill_file)):
            try:
                self.host.write_text(str(kill_file), "1")
                return
            except OSError:
                pass
        self.host.kill(self.pids())

    def remove(self) -> None:
        for leaf in _leaves(self.host, self.path):
            remove_dir(self.host, leaf, tidy_parent=False)
        self.leaf = None
        remove_dir(self.host, self.path)


class _ResetPeak:
    """Linux 6.12+: a write to memory.peak resets the peak seen through that open file."""
    method = "reset"

    def __init__(self, file):
        self.file = file

    @classmethod
    def start(cls, host: Host, leaf: Path) -> _ResetPeak | None:
        try:
            file = host.open_rw(str(leaf / "memory.peak"))
        except OSError:
            return None
        try:
            file.write("reset\n")
            file.flush()
        except OSError:  # before 6.12 the file takes no write (EINVAL)
            try:
                file.close()  # flushes the refused write again, and fails again
            except OSError:
                pass
            return None
        return cls(file)

    def read(self):
        try:
            self.file.seek(0)
            return int(self.file.read().strip()), self.method
        except (OSError, ValueError):
            return None, None

    def close(self):
        self.file.close()


class _FreshOrSampledPeak:
    """Before Linux 6.12 memory.peak cannot be reset, but the agent's leaf is new, so its
    memory.peak is the peak since the agent started. If it rose during the window, the
    window's peak is exactly it ("fresh"). If not (a job smaller than what came before it in
    the same agent: its load, or batch 32 before batch 1), the peak is the largest
    memory.current read every SAMPLE_S during the window ("sampled"): a spike between two
    readings can be missed, so it may be low, never inflated."""

    def __init__(self, host: Host, leaf: Path):
        self.host, self.leaf = host, leaf
        self.start_peak = read_int(host, leaf / "memory.peak") or 0
        self.sampled = read_int(host, leaf / "memory.current")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True,
                                        name=f"peak {leaf.name}")
        self._thread.start()

    def _sample(self) -> None:
        current = self.leaf / "memory.current"
        while not self._stop.wait(SAMPLE_S):
            value = read_int(self.host, current)
            if value is not None and (self.sampled is None or value > self.sampled):
                self.sampled = value

    def read(self):
        peak = read_int(self.host, self.leaf / "memory.peak")
        if peak is not None and peak > self.start_peak:
            return peak, "fresh"
        return (self.sampled, "sampled") if self.sampled is not None else (None, None)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=1)


def farm_base(host: Host, device: str, cpus: bool, cpuset: bool = False) -> Path:
    """<base>/farm, with the controllers the devices need enabled down to it."""
    wanted = ("+memory +cpu" if cpus else "+memory") + (" +cpuset" if cpuset else "")
    try:
        base = CGROUP_ROOT / "farm"
        make_dir(host, base, device)
        for parent in (CGROUP_ROOT, base):
            write(host, parent / "cgroup.subtree_control", wanted, device)
        return base
    except ContainerError as error:
        if not _permission(error):
            raise
    delegated = _delegated(host, device, cpus)
    if "cpuset" not in _controllers(host, delegated):  # then not pinned
        wanted = wanted.replace(" +cpuset", "")
    base = delegated / "farm"
    make_dir(host, base, device)
    for parent in (delegated, base):
        write(host, parent / "cgroup.subtree_control", wanted, device)
    return base


def _delegated(host: Host, device: str, cpus: bool) -> Path:
    """The cgroup delegated to this user that farm runs in (or, on a later run, the parent of
    the leaf farm moved itself into), with farm's own processes moved out into a leaf."""
    own = CGROUP_ROOT / own_cgroup_paths(host).get("", "/").lstrip("/")
    delegated = own.parent if own.name == CONTROLLER_LEAF else own
    controllers = _controllers(host, delegated)
    needed = ["memory", "cpu"] if cpus else ["memory"]
    missing = [c for c in needed if c not in controllers]
    if delegated == CGROUP_ROOT or missing or not _writable(host, delegated):
        why = (f"its controllers lack {', '.join(missing)}" if missing and
               delegated != CGROUP_ROOT else "it is not delegated to this user")
        raise ContainerError(
            f"cannot make cgroups for device {device!r} on {host.name}: /sys/fs/cgroup is not "
            f"writable and farm's own cgroup {delegated} cannot hold them ({why})",
            delegation_hint(cpus))
    leaf = delegated / CONTROLLER_LEAF
    stray = read_pids(host, delegated / "cgroup.procs")
    if stray:
        make_dir(host, leaf, device)
        for pid in stray:
            try:
                host.write_text(str(leaf / "cgroup.procs"), str(pid))
            except ProcessLookupError:
                pass  # it ended meanwhile
            except OSError as error:
                if error.errno != errno.ESRCH:
                    raise ContainerError(
                        f"cannot move process {pid} out of {delegated} into {leaf} on "
                        f"{host.name}: {error.strerror}", delegation_hint(cpus)) from None
    return delegated


def _writable(host: Host, cgroup: Path) -> bool:
    try:
        host.write_text(str(cgroup / "cgroup.subtree_control"), "")  # changes nothing
        return True
    except OSError:
        return False


def _controllers(host: Host, cgroup: Path) -> list[str]:
    try:
        return host.read_text(str(cgroup / "cgroup.controllers")).split()
    except OSError:
        return []


def _leaves(host: Host, path: Path) -> list[Path]:
    try:
        names = host.list_dir(str(path))
    except OSError:
        return []
    return [path / n for n in sorted(names)
            if n.startswith("agent-") and host.is_dir(str(path / n))]


def _full_stall_us(host: Host, pressure: Path) -> int | None:
    """PSI's total time all the cgroup's processes were stalled on memory, in µs."""
    try:
        text = host.read_text(str(pressure))
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("full "):
            return int(dict(f.split("=") for f in line.split()[1:])["total"])
    return None
