"""cgroup v1: separate memory and cpu hierarchies (the machines CI runs on)."""
from __future__ import annotations

from pathlib import Path

from farm.cgroups import (CGROUP_ROOT, join_command, kill_pids, make_dir, own_cgroup_paths,
                          read_int, read_keyed, read_pids, remove_dir, write)
from farm.errors import ContainerError

CFS_PERIOD_US = 100_000


def _hierarchy(controller: str) -> Path | None:
    """Where a v1 controller is mounted, nested under this process's own cgroup."""
    for mount in (controller, f"{controller},cpuacct", f"cpuacct,{controller}"):
        root = CGROUP_ROOT / mount
        if root.is_dir():
            own = own_cgroup_paths().get(controller, "/").lstrip("/")
            return root / own
    return None


class V1Container:
    version = "v1"

    def __init__(self, name: str, memory_dir: Path, cpu_dir: Path | None, limit: int):
        self.name, self.memory_dir, self.cpu_dir, self._limit = name, memory_dir, cpu_dir, limit

    @classmethod
    def create(cls, name: str, memory_bytes: int, cpus: float | None) -> V1Container:
        memory_root, cpu_root = _hierarchy("memory"), _hierarchy("cpu")
        memory_dir = memory_root / "farm" / name
        busy = read_pids(memory_dir / "cgroup.procs")
        if busy:
            raise ContainerError(
                f"device {name!r} is in use: its cgroup {memory_dir} holds processes {busy}",
                "another farm run is using this device; wait for it or stop it")
        make_dir(memory_dir, name)
        write(memory_dir / "memory.limit_in_bytes", str(memory_bytes), name)
        # Swap off inside: with swap accounting, memory+swap may not exceed memory alone.
        if (memory_dir / "memory.memsw.limit_in_bytes").exists():
            write(memory_dir / "memory.memsw.limit_in_bytes", str(memory_bytes), name)
        write(memory_dir / "memory.swappiness", "0", name)
        cpu_dir = None
        if cpus is not None and cpu_root is not None:
            cpu_dir = cpu_root / "farm" / name
            make_dir(cpu_dir, name)
            write(cpu_dir / "cpu.cfs_period_us", str(CFS_PERIOD_US), name)
            write(cpu_dir / "cpu.cfs_quota_us", str(int(cpus * CFS_PERIOD_US)), name)
        container = cls(name, memory_dir, cpu_dir, read_int(memory_dir / "memory.limit_in_bytes"))
        return container

    def join_command(self, argv: list[str]) -> list[str]:
        procs = [self.memory_dir / "cgroup.procs"]
        if self.cpu_dir is not None:
            procs.append(self.cpu_dir / "cgroup.procs")
        return join_command(procs, argv)

    def reset_peak(self) -> bool:
        write(self.memory_dir / "memory.max_usage_in_bytes", "0", self.name)
        return True

    def peak_bytes(self) -> int | None:
        return read_int(self.memory_dir / "memory.max_usage_in_bytes")

    def limit_bytes(self) -> int:
        return self._limit

    def oom_kills(self) -> int:
        # 'oom_kill' appeared in memory.oom_control with Linux 4.13.
        return read_keyed(self.memory_dir / "memory.oom_control").get("oom_kill", 0)

    def pids(self) -> list[int]:
        return read_pids(self.memory_dir / "cgroup.procs")

    def kill(self) -> None:
        kill_pids(self.pids())

    def remove(self) -> None:
        remove_dir(self.memory_dir, self.memory_dir / "cgroup.procs")
        if self.cpu_dir is not None:
            remove_dir(self.cpu_dir, self.cpu_dir / "cgroup.procs")
