"""Memory and CPU containers for emulated devices, on cgroup v1 or v2, on this host or on a
board reached over SSH (every file goes through a farm.hosts.Host).

A Container is one cgroup (per controller on v1) named after its device. The agent joins it
before Python starts (see join_command), so the container's peak counts the whole process.
Creating one never silently degrades: a missing or read-only hierarchy is a ContainerError that
says what to do.
"""
from __future__ import annotations

import time
from pathlib import PurePosixPath as Path
from typing import Protocol

from farm.errors import ContainerError
from farm.hosts import LOCAL, Host

CGROUP_ROOT = Path("/sys/fs/cgroup")


class Container(Protocol):
    name: str
    version: str  # "v1" or "v2"

    def new_agent(self) -> None:
        """An agent process is about to join (v2: a fresh leaf cgroup of its own)."""
    def join_command(self, argv: list[str]) -> list[str]: ...
    def watch_peak(self) -> PeakWatch:
        """The container's peak from now on (a load, a job), and how it was taken."""
    def limit_bytes(self) -> int: ...
    def oom_kills(self) -> int: ...
    def thrashing(self) -> str | None:
        """Why the agent is stalled at the memory limit instead of running, or None (v2 with
        PSI; called about once a second while a job runs)."""
    def pids(self) -> list[int]: ...
    def paths(self) -> list[str]: ...  # its cgroup folders, one per hierarchy
    def kill(self) -> None: ...
    def remove(self) -> None: ...


class PeakWatch(Protocol):
    """A peak over one window. read() gives (bytes, method), method one of PEAK_METHODS, or
    (None, None) where none could be taken; it may be called before close()."""

    def read(self) -> tuple[int | None, str | None]: ...
    def close(self) -> None: ...


# How a container peak was taken (stored beside it as container_peak_method):
PEAK_METHODS = {
    "reset": "the kernel's peak counter, reset when the window began (v1; v2 from Linux 6.12)",
    "fresh": "the peak of the agent's own new cgroup, which rose during the window, so it is "
             "the window's (v2 before 6.12)",
    "sampled": "the largest memory.current read every 2 ms in the window: may miss a short "
               "spike, never inflated (v2 before 6.12, a window below an earlier peak)",
}


def open_container(name: str, memory_bytes: int, cpus: float | None,
                   host: Host = LOCAL) -> Container:
    """Create (or take over an idle leftover of) the container for device `name` on `host`."""
    if host.exists(str(CGROUP_ROOT / "cgroup.controllers")):
        from farm.cgroups.v2 import V2Container
        return V2Container.create(host, name, memory_bytes, cpus)
    if host.is_dir(str(CGROUP_ROOT / "memory")):
        from farm.cgroups.v1 import V1Container
        return V1Container.create(host, name, memory_bytes, cpus)
    raise ContainerError(
        f"no cgroup memory controller under {CGROUP_ROOT} on {host.name} for device {name!r}",
        "mount cgroups (v2: mount -t cgroup2 none /sys/fs/cgroup), or use kind: local for an "
        "unlimited run")


def join_command(procs_files: list[Path], argv: list[str]) -> list[str]:
    """A command that moves itself into the given cgroups, then execs argv in its place."""
    moves = " && ".join(f'echo $$ > "${i + 1}"' for i in range(len(procs_files)))
    script = f'{moves} && shift {len(procs_files)} && exec "$@"'
    return ["/bin/sh", "-c", script, "farm-join", *map(str, procs_files), *argv]


def _why(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def write(host: Host, path: Path, value: str, device: str) -> None:
    try:
        host.write_text(str(path), value)
    except OSError as error:
        raise ContainerError(
            f"cannot write {value.strip()!r} to {path} on {host.name} for device {device!r}: "
            f"{_why(error)}",
            "run farm as root (or with a delegated cgroup) on a writable cgroup hierarchy") from None


def make_dir(host: Host, path: Path, device: str) -> None:
    try:
        host.mkdir(str(path))
    except OSError as error:
        raise ContainerError(
            f"cannot create cgroup {path} on {host.name} for device {device!r}: {_why(error)}",
            "run farm as root (on a board: an SSH user that may write /sys/fs/cgroup), or on "
            "cgroup v2 delegate a subtree to your user (systemd-run --user --scope -p "
            "Delegate=yes)") from None


def read_int(host: Host, path: Path) -> int | None:
    try:
        text = host.read_text(str(path)).strip()
    except OSError:
        return None
    return None if text in ("", "max") else int(text)


def read_keyed(host: Host, path: Path) -> dict[str, int]:
    """Files of 'key value' lines, such as memory.events or memory.oom_control."""
    try:
        pairs = (line.split() for line in host.read_text(str(path)).splitlines())
        return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}
    except OSError:
        return {}


def read_pids(host: Host, path: Path) -> list[int]:
    try:
        return [int(x) for x in host.read_text(str(path)).split()]
    except OSError:
        return []


def remove_dir(host: Host, path: Path, attempts: int = 50, tidy_parent: bool = True) -> None:
    """rmdir a cgroup once its processes have gone (killed ones take a moment to leave), and
    farm's parent cgroup with it once no device uses it (tidy_parent)."""
    for _ in range(attempts):
        host.kill(read_pids(host, path / "cgroup.procs"))
        try:
            host.rmdir(str(path))
            break
        except FileNotFoundError:
            break
        except OSError:
            if not host.exists(str(path)):
                break
            time.sleep(0.1)
    if not tidy_parent:
        return
    try:
        host.rmdir(str(path.parent))  # farm's own parent cgroup, once no device uses it
    except OSError:
        pass


def own_cgroup_paths(host: Host = LOCAL) -> dict[str, str]:
    """Controller name -> this process's cgroup path, from /proc/self/cgroup ('' for v2). Over
    SSH, 'self' is the login session's SFTP server, a sibling of the agent it will start."""
    paths = {}
    for line in host.read_text("/proc/self/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths
