"""Memory and CPU containers for emulated devices, on cgroup v1 or v2.

A Container is one cgroup (per controller on v1) named after its device. The agent joins it
before Python starts (see join_command), so the container's peak counts the whole process.
Creating one never silently degrades: a missing or read-only hierarchy is a ContainerError that
says what to do.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from farm.errors import ContainerError

CGROUP_ROOT = Path("/sys/fs/cgroup")


class Container(Protocol):
    name: str
    version: str  # "v1" or "v2"

    def join_command(self, argv: list[str]) -> list[str]: ...
    def reset_peak(self) -> bool: ...
    def peak_bytes(self) -> int | None: ...
    def limit_bytes(self) -> int: ...
    def oom_kills(self) -> int: ...
    def pids(self) -> list[int]: ...
    def kill(self) -> None: ...
    def remove(self) -> None: ...


def open_container(name: str, memory_bytes: int, cpus: float | None) -> Container:
    """Create (or take over an idle leftover of) the container for device `name`."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        from farm.cgroups.v2 import V2Container
        return V2Container.create(name, memory_bytes, cpus)
    if (CGROUP_ROOT / "memory").is_dir():
        from farm.cgroups.v1 import V1Container
        return V1Container.create(name, memory_bytes, cpus)
    raise ContainerError(
        f"no cgroup memory controller under {CGROUP_ROOT} for device {name!r}",
        "mount cgroups (v2: mount -t cgroup2 none /sys/fs/cgroup), or use kind: local for an "
        "unlimited run")


def join_command(procs_files: list[Path], argv: list[str]) -> list[str]:
    """A command that moves itself into the given cgroups, then execs argv in its place."""
    moves = " && ".join(f'echo $$ > "${i + 1}"' for i in range(len(procs_files)))
    script = f'{moves} && shift {len(procs_files)} && exec "$@"'
    return ["/bin/sh", "-c", script, "farm-join", *map(str, procs_files), *argv]


def write(path: Path, value: str, device: str) -> None:
    try:
        path.write_text(value)
    except OSError as error:
        raise ContainerError(
            f"cannot write {value.strip()!r} to {path} for device {device!r}: {error.strerror}",
            "run farm as root (or with a delegated cgroup) on a writable cgroup hierarchy") from None


def make_dir(path: Path, device: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ContainerError(
            f"cannot create cgroup {path} for device {device!r}: {error.strerror}",
            "run farm as root, or on cgroup v2 delegate a subtree to your user "
            "(systemd-run --user --scope -p Delegate=yes)") from None


def read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return None if text in ("", "max") else int(text)


def read_keyed(path: Path) -> dict[str, int]:
    """Files of 'key value' lines, such as memory.events or memory.oom_control."""
    try:
        pairs = (line.split() for line in path.read_text().splitlines())
        return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}
    except OSError:
        return {}


def read_pids(path: Path) -> list[int]:
    try:
        return [int(x) for x in path.read_text().split()]
    except OSError:
        return []


def kill_pids(pids: list[int]) -> None:
    import signal
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove_dir(path: Path, procs: Path, attempts: int = 50) -> None:
    """rmdir a cgroup once its processes have gone (killed ones take a moment to leave)."""
    import time
    for _ in range(attempts):
        kill_pids(read_pids(procs))
        try:
            path.rmdir()
            break
        except FileNotFoundError:
            break
        except OSError:
            time.sleep(0.1)
    try:
        path.parent.rmdir()  # farm's own parent cgroup, once no device uses it
    except OSError:
        pass


def own_cgroup_paths() -> dict[str, str]:
    """Controller name -> this process's cgroup path, from /proc/self/cgroup ('' for v2)."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths
