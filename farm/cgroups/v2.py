"""cgroup v2: one unified hierarchy (most users' machines).

The farm subtree sits at the root of the hierarchy, the one place where v2's "no internal
processes" rule lets us enable controllers while processes live elsewhere.
"""
from __future__ import annotations

from farm.cgroups import (CGROUP_ROOT, Path, join_command, make_dir, read_int, read_keyed,
                          read_pids, remove_dir, write)
from farm.errors import ContainerError
from farm.hosts import Host

CPU_PERIOD_US = 100_000


class V2Container:
    version = "v2"

    def __init__(self, host: Host, name: str, path: Path, limit: int):
        self.host, self.name, self.path, self._limit = host, name, path, limit
        self._peak_file = None

    @classmethod
    def create(cls, host: Host, name: str, memory_bytes: int, cpus: float | None) -> V2Container:
        base = CGROUP_ROOT / "farm"
        path = base / name
        busy = read_pids(host, path / "cgroup.procs")
        if busy:
            raise ContainerError(
                f"device {name!r} is in use: its cgroup {path} on {host.name} holds processes "
                f"{busy}", "another farm run is using this device; wait for it or stop it")
        wanted = "+memory +cpu" if cpus is not None else "+memory"
        make_dir(host, base, name)
        for parent in (CGROUP_ROOT, base):
            write(host, parent / "cgroup.subtree_control", wanted, name)
        make_dir(host, path, name)
        write(host, path / "memory.max", str(memory_bytes), name)
        if host.exists(str(path / "memory.swap.max")):
            write(host, path / "memory.swap.max", "0", name)
        if cpus is not None:
            write(host, path / "cpu.max", f"{int(cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}", name)
        if not host.exists(str(path / "memory.peak")):
            raise ContainerError(
                f"{path}/memory.peak is missing on {host.name} (Linux 5.19 or newer has it)",
                "upgrade the kernel, or use kind: local")
        return cls(host, name, path, read_int(host, path / "memory.max"))

    def join_command(self, argv: list[str]) -> list[str]:
        return join_command([self.path / "cgroup.procs"], argv)

    def reset_peak(self) -> bool:
        # Since Linux 6.12 a write to memory.peak resets the peak seen through that open file;
        # older kernels refuse, and then the peak is not reported rather than inflated.
        if self._peak_file is not None:
            self._peak_file.close()
        try:
            self._peak_file = self.host.open_rw(str(self.path / "memory.peak"))
            self._peak_file.write("reset\n")
            self._peak_file.flush()
            return True
        except OSError:
            self._peak_file = None
            return False

    def peak_bytes(self) -> int | None:
        if self._peak_file is None:
            return None
        self._peak_file.seek(0)
        return int(self._peak_file.read().strip())

    def limit_bytes(self) -> int:
        return self._limit

    def oom_kills(self) -> int:
        return read_keyed(self.host, self.path / "memory.events").get("oom_kill", 0)

    def pids(self) -> list[int]:
        return read_pids(self.host, self.path / "cgroup.procs")

    def paths(self) -> list[str]:
        return [str(self.path)]

    def kill(self) -> None:
        kill_file = self.path / "cgroup.kill"  # Linux 5.14+: kills the whole cgroup at once
        if self.host.exists(str(kill_file)):
            try:
                self.host.write_text(str(kill_file), "1")
                return
            except OSError:
                pass
        self.host.kill(self.pids())

    def remove(self) -> None:
        if self._peak_file is not None:
            self._peak_file.close()
            self._peak_file = None
        remove_dir(self.host, self.path)
