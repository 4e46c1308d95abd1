"""cgroup v2: one unified hierarchy (most users' machines).

The farm subtree sits at the root of the hierarchy, the one place where v2's "no internal
processes" rule lets us enable controllers while processes live elsewhere.
"""
from __future__ import annotations

from pathlib import Path

from farm.cgroups import (CGROUP_ROOT, join_command, kill_pids, make_dir, read_int, read_keyed,
                          read_pids, remove_dir, write)
from farm.errors import ContainerError

CPU_PERIOD_US = 100_000


class V2Container:
    version = "v2"

    def __init__(self, name: str, path: Path, limit: int):
        self.name, self.path, self._limit = name, path, limit
        self._peak_fd = None

    @classmethod
    def create(cls, name: str, memory_bytes: int, cpus: float | None) -> V2Container:
        base = CGROUP_ROOT / "farm"
        path = base / name
        busy = read_pids(path / "cgroup.procs")
        if busy:
            raise ContainerError(
                f"device {name!r} is in use: its cgroup {path} holds processes {busy}",
                "another farm run is using this device; wait for it or stop it")
        wanted = "+memory +cpu" if cpus is not None else "+memory"
        make_dir(base, name)
        for parent in (CGROUP_ROOT, base):
            write(parent / "cgroup.subtree_control", wanted, name)
        make_dir(path, name)
        write(path / "memory.max", str(memory_bytes), name)
        if (path / "memory.swap.max").exists():
            write(path / "memory.swap.max", "0", name)
        if cpus is not None:
            write(path / "cpu.max", f"{int(cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}", name)
        if not (path / "memory.peak").exists():
            raise ContainerError(
                f"{path}/memory.peak is missing (Linux 5.19 or newer has it)",
                "upgrade the kernel, or use kind: local")
        return cls(name, path, read_int(path / "memory.max"))

    def join_command(self, argv: list[str]) -> list[str]:
        return join_command([self.path / "cgroup.procs"], argv)

    def reset_peak(self) -> bool:
        # Since Linux 6.12 a write to memory.peak resets the peak seen through that open file;
        # older kernels refuse, and then the peak is not reported rather than inflated.
        if self._peak_fd is not None:
            self._peak_fd.close()
        try:
            self._peak_fd = open(self.path / "memory.peak", "r+")
            self._peak_fd.write("reset\n")
            self._peak_fd.flush()
            return True
        except OSError:
            self._peak_fd = None
            return False

    def peak_bytes(self) -> int | None:
        if self._peak_fd is None:
            return None
        self._peak_fd.seek(0)
        return int(self._peak_fd.read().strip())

    def limit_bytes(self) -> int:
        return self._limit

    def oom_kills(self) -> int:
        return read_keyed(self.path / "memory.events").get("oom_kill", 0)

    def pids(self) -> list[int]:
        return read_pids(self.path / "cgroup.procs")

    def kill(self) -> None:
        kill_file = self.path / "cgroup.kill"  # Linux 5.14+: kills the whole cgroup at once
        if kill_file.exists():
            try:
                kill_file.write_text("1")
                return
            except OSError:
                pass
        kill_pids(self.pids())

    def remove(self) -> None:
        if self._peak_fd is not None:
            self._peak_fd.close()
            self._peak_fd = None
        remove_dir(self.path, self.path / "cgroup.procs")
