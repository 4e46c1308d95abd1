"""cgroup v1: separate memory and cpu hierarchies (the machines CI runs on, and JetPack 4.6)."""
from __future__ import annotations

from farm.cgroups import (CGROUP_ROOT, Path, cpu_list, join_command, make_dir, own_cgroup_paths,
                          read_int, read_keyed, read_pids, read_str, remove_dir, write)
from farm.errors import ContainerError
from farm.hosts import Host

CFS_PERIOD_US = 100_000


def _hierarchy(host: Host, controller: str) -> Path | None:
    """Where a v1 controller is mounted, nested under the caller's own cgroup."""
    for mount in (controller, f"{controller},cpuacct", f"cpuacct,{controller}"):
        root = CGROUP_ROOT / mount
        if host.is_dir(str(root)):
            own = own_cgroup_paths(host).get(controller, "/").lstrip("/")
            return root / own
    return None


class V1Container:
    version = "v1"

    def __init__(self, host: Host, name: str, memory_dir: Path, cpu_dir: Path | None, limit: int,
                 cpuset_dir: Path | None = None):
        self.host, self.name, self.memory_dir, self.cpu_dir = host, name, memory_dir, cpu_dir
        self._limit, self.cpuset_dir = limit, cpuset_dir
        self.cores = read_str(host, cpuset_dir / "cpuset.cpus") if cpuset_dir else None

    @classmethod
    def create(cls, host: Host, name: str, memory_bytes: int, cpus: float | None,
               cores: tuple[int, ...] | None = None) -> V1Container:
        memory_root, cpu_root = _hierarchy(host, "memory"), _hierarchy(host, "cpu")
        memory_dir = memory_root / "farm" / name
        busy = read_pids(host, memory_dir / "cgroup.procs")
        if busy:
            raise ContainerError(
                f"device {name!r} is in use: its cgroup {memory_dir} on {host.name} holds "
                f"processes {busy}", "another farm run is using this device; wait for it or stop it")
        make_dir(host, memory_dir, name)
        write(host, memory_dir / "memory.limit_in_bytes", str(memory_bytes), name)
        # Swap off inside: with swap accounting, memory+swap may not exceed memory alone.
        if host.exists(str(memory_dir / "memory.memsw.limit_in_bytes")):
            write(host, memory_dir / "memory.memsw.limit_in_bytes", str(memory_bytes), name)
        write(host, memory_dir / "memory.swappiness", "0", name)
        cpu_dir = None
        if cpus is not None and cpu_root is not None:
            cpu_dir = cpu_root / "farm" / name
            make_dir(host, cpu_dir, name)
            write(host, cpu_dir / "cpu.cfs_period_us", str(CFS_PERIOD_US), name)
            write(host, cpu_dir / "cpu.cfs_quota_us", str(int(cpus * CFS_PERIOD_US)), name)
        limit = read_int(host, memory_dir / "memory.limit_in_bytes")
        cpuset_dir = _pinned(host, name, cores) if cores else None
        return cls(host, name, memory_dir, cpu_dir, limit, cpuset_dir)

    def join_command(self, argv: list[str]) -> list[str]:
        procs = [d / "cgroup.procs" for d in (self.memory_dir, self.cpu_dir, self.cpuset_dir)
                 if d is not None]
        return join_command(procs, argv)

    def new_agent(self) -> None:
        pass  # the peak counter resets (watch_peak): one cgroup serves every agent

    def watch_peak(self) -> _ResetPeak:
        write(self.host, self.memory_dir / "memory.max_usage_in_bytes", "0", self.name)
        return _ResetPeak(self.host, self.memory_dir / "memory.max_usage_in_bytes")

    def thrashing(self) -> str | None:
        return None  # v1 has no per-cgroup PSI

    def limit_bytes(self) -> int:
        return self._limit

    def memory_split(self) -> dict[str, int] | None:
        stat = read_keyed(self.host, self.memory_dir / "memory.stat")
        if "total_rss" not in stat:
            return None
        # kmem accounting may be off (cgroup.memory=nokmem): then no kernel figure.
        kernel = read_int(self.host, self.memory_dir / "memory.kmem.usage_in_bytes")
        split = {"anon": stat["total_rss"], "file": stat.get("total_cache", 0)}
        return split | ({"kernel": kernel} if kernel is not None else {})

    def oom_kills(self) -> int:
        # 'oom_kill' appeared in memory.oom_control with Linux 4.13.
        return read_keyed(self.host, self.memory_dir / "memory.oom_control").get("oom_kill", 0)

    def pids(self) -> list[int]:
        return read_pids(self.host, self.memory_dir / "cgroup.procs")

    def paths(self) -> list[str]:
        return [str(d) for d in (self.memory_dir, self.cpu_dir, self.cpuset_dir) if d is not None]

    def kill(self) -> None:
        self.host.kill(self.pids())

    def remove(self) -> None:
        remove_dir(self.host, self.memory_dir)
        for folder in (self.cpu_dir, self.cpuset_dir):
            if folder is not None:
                remove_dir(self.host, folder)


def _pinned(host: Host, name: str, cores: tuple[int, ...]) -> Path | None:
    """The device's cpuset cgroup on `cores`, or None where v1 has no cpuset hierarchy. A new
    v1 cpuset starts with no CPUs and no memory nodes: farm's parent gets its parent's."""
    root = _hierarchy(host, "cpuset")
    if root is None:
        return None
    parent = root / "farm"
    make_dir(host, parent, name)
    for setting in ("cpuset.cpus", "cpuset.mems"):
        if not read_str(host, parent / setting):
            write(host, parent / setting, read_str(host, root / setting), name)
    folder = parent / name
    make_dir(host, folder, name)
    write(host, folder / "cpuset.mems", read_str(host, parent / "cpuset.mems"), name)
    write(host, folder / "cpuset.cpus", cpu_list(cores), name)
    return folder


class _ResetPeak:
    def __init__(self, host: Host, counter: Path):
        self.host, self.counter = host, counter

    def read(self) -> tuple[int | None, str | None]:
        peak = read_int(self.host, self.counter)
        return (peak, "reset") if peak is not None else (None, None)

    def close(self) -> None:
        pass
