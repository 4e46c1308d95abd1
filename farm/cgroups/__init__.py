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

from agents.conditions import cpu_list  # noqa: F401 (the cpuset notation, for v1 and v2)
from farm.errors import ContainerError
from farm.hosts import LOCAL, Host

CGROUP_ROOT = Path("/sys/fs/cgroup")


class Container(Protocol):
    name: str
    version: str  # "v1" or "v2"
    cores: str | None  # the CPUs it is pinned to ("0-1"), None where it is not

    def new_agent(self) -> None:
        """An agent process is about to join (v2: a fresh leaf cgroup of its own)."""
    def join_command(self, argv: list[str]) -> list[str]: ...
    def watch_peak(self) -> PeakWatch:
        """The container's peak from now on (a load, a job), and how it was taken."""
    def limit_bytes(self) -> int: ...
    def memory_split(self) -> dict[str, int] | None:
        """Bytes charged to it now: {'anon', 'kernel', 'file'} (None where unreadable)."""
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
                   host: Host = LOCAL, cores: tuple[int, ...] | None = None) -> Container:
    """Create (or take over an idle leftover of) the container for device `name` on `host`,
    pinned to `cores` where the kernel has the cpuset controller (its `cores` says whether)."""
    if host.exists(str(CGROUP_ROOT / "cgroup.controllers")):
        from farm.cgroups.v2 import V2Container
        return V2Container.create(host, name, memory_bytes, cpus, cores)
    if host.is_dir(str(CGROUP_ROOT / "memory")):
        from farm.cgroups.v1 import V1Container
        return V1Container.create(host, name, memory_bytes, cpus, cores)
    raise ContainerError(
        f"no cgroup memory controller under {CGROUP_ROOT} on {host.name} for device {name!r}",
        "mount cgroups (v2: mount -t cgroup2 none /sys/fs/cgroup), or use kind: local for an "
        "unlimited run")


def cores_in_use(exclude: set[str], host: Host = LOCAL) -> set[int]:
    """The cores other farm devices on this host are pinned to now (their cgroups' cpuset.cpus,
    v1 or v2), so that a second farm run pins its devices beside them, not onto them."""
    used, own = set(), own_cgroup_paths(host)
    v2_own = CGROUP_ROOT / own.get("", "/").lstrip("/")
    for farm_dir in {CGROUP_ROOT / "cpuset" / own.get("cpuset", "/").lstrip("/") / "farm",
                     CGROUP_ROOT / "farm", v2_own / "farm", v2_own.parent / "farm"}:
        try:
            names = host.list_dir(str(farm_dir))
        except OSError:
            continue
        for name in names:
            if name in exclude or not read_pids_below(host, farm_dir / name):
                continue
            used.update(parse_cpu_list(read_str(host, farm_dir / name / "cpuset.cpus")))
    return used


def parse_cpu_list(text: str) -> set[int]:
    """'0-2,5' -> {0, 1, 2, 5}."""
    found = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        found.update(range(int(low), int(high or low) + 1))
    return found


def read_pids_below(host: Host, path: Path) -> list[int]:
    """The processes of a cgroup and of its child cgroups (v2 agents run in leaves)."""
    pids = read_pids(host, path / "cgroup.procs")
    try:
        children = host.list_dir(str(path))
    except OSError:
        return pids
    return pids + [pid for child in children if host.is_dir(str(path / child))
                   for pid in read_pids(host, path / child / "cgroup.procs")]


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


def read_str(host: Host, path: Path) -> str:
    """A one-value file's text, stripped ("" where it cannot be read)."""
    try:
        return host.read_text(str(path)).strip()
    except OSError:
        return ""


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
