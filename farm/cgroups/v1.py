"""cgroup v1: separate memory and cpu hierarchies (the machines CI runs on, and JetPack 4.6)."""
from __future__ import annotations

from farm.cgroups import (CGROUP_ROOT, Path, join_command, make_dir, own_cgroup_paths, read_int,
                          read_keyed, read_pids, remove_dir, write)
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

    def __init__(self, host: Host, name: str, memory_dir: Path, cpu_dir: Path | None, limit: int):
        self.host, self.name, self.memory_dir, self.cpu_dir = host, name, memory_dir, cpu_dir
        self._limit = limit

    @classmethod
    def create(cls, host: Host, name: str, memory_bytes: int, cpus: float | None) -> V1Container:
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
        return cls(host, name, memory_dir, cpu_dir, limit)

    def join_command(self, argv: list[str]) -> list[str]:
        procs = [self.memory_dir / "cgroup.procs"]
        if self.cpu_dir is not None:
            procs.append(self.cpu_dir / "cgroup.procs")
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

    def oom_kills(self) -> int:
        # 'oom_kill' appeared in memory.oom_control with Linux 4.13.
        return read_keyed(self.host, self.memory_dir / "memory.oom_control").get("oom_kill", 0)

    def pids(self) -> list[int]:
        return read_pids(self.host, self.memory_dir / "cgroup.procs")

    def paths(self) -> list[str]:
        return [str(d) for d in (self.memory_dir, self.cpu_dir) if d is not None]

    def kill(self) -> None:
        self.host.kill(self.pids())

    def remove(self) -> None:
        remove_dir(self.host, self.memory_dir)
        if self.cpu_dir is not None:
            remove_dir(self.host, self.cpu_dir)


class _ResetPeak:
    def __init__(self, host: Host, counter: Path):
        self.host, self.counter = host, counter

    def read(self) -> tuple[int | None, str | None]:
        peak = read_int(self.host, self.counter)
        return (peak, "reset") if peak is not None else (None, None)

    def close(self) -> None:
        pass
