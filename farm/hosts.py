"""The machine a device's files and processes live on: this one, or a board reached over SSH.

Code that manages cgroups or reads /proc talks to a Host instead of the local filesystem, so the
same code serves an emulated device here and a board on the lab network (farm.devices.ssh gives
the SFTP-backed Host). Paths are POSIX strings; failures are OSError, as from the os module.
"""
from __future__ import annotations

import os
import signal
import subprocess
from typing import IO, Protocol


class Host(Protocol):
    name: str  # how messages name the machine: 'this host' or 'nano-01 (farm@10.0.0.5:22)'

    def read_text(self, path: str) -> str: ...
    def write_text(self, path: str, text: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def is_dir(self, path: str) -> bool: ...
    def mkdir(self, path: str) -> None:
        """Create a directory and its missing parents; an existing one is fine."""
    def rmdir(self, path: str) -> None: ...
    def list_dir(self, path: str) -> list[str]: ...
    def open_rw(self, path: str) -> IO[str]:
        """A file kept open for reading and writing (cgroup v2's per-descriptor memory.peak)."""
    def kill(self, pids: list[int]) -> None:
        """SIGKILL these processes; ones already gone are no error."""
    def start(self, argv: list[str]) -> Process:
        """A process with text pipes to its stdin, stdout and stderr (farm.devices.lock's
        locker, which must live on the device's own host)."""


class Process(Protocol):
    """What a caller of Host.start needs: subprocess.Popen here, an SSH channel on a board."""
    stdin: IO[str]
    stdout: IO[str]
    stderr: IO[str]
    pid: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...


class LocalHost:
    name = "this host"

    def read_text(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def write_text(self, path: str, text: str) -> None:
        with open(path, "w") as f:
            f.write(text)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def mkdir(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def list_dir(self, path: str) -> list[str]:
        return os.listdir(path)

    def open_rw(self, path: str) -> IO[str]:
        return open(path, "r+")

    def kill(self, pids: list[int]) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def start(self, argv: list[str]) -> Process:
        # Its own session: a Ctrl-C meant for farm must not end it before farm has cleaned up.
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)


LOCAL = LocalHost()
