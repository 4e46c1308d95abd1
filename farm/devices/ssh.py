"""Reaching a board over SSH (paramiko): connect, verify its host key, run commands, move files.

Host keys are checked against known_hosts and never accepted on the fly: an unknown or changed
key refuses the connection with the fingerprint and the `farm devices trust` hint, and trust()
pins a key only after a person (or --yes) said so. paramiko's and the socket's errors become
farm's own here. A Board is also a farm.hosts.Host (files over SFTP), so cgroups on the board are
managed by the same code as cgroups on this host.
"""
from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import logging
import os
import posixpath
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import paramiko

# paramiko logs socket errors of connections we close on purpose; farm reports what matters.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False

from farm.errors import DeviceError, DeviceUnreachable, HostKeyRefused

KEEPALIVE_S = 5
# A board that stops answering mid-job is noticed within about this long (TCP_USER_TIMEOUT and
# keepalive probes), rather than after the kernel's default quarter of an hour.
DEAD_PEER_S = 30
SSH_CONFIG = Path("~/.ssh/config").expanduser()
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


@dataclass(frozen=True)
class Target:
    """Where and how to reach a device: the inventory entry over ~/.ssh/config's Host block."""
    device: str
    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...]
    known_hosts: Path
    timeout_s: float

    @property
    def host_key_name(self) -> str:
        """The name known_hosts files use: 'host', or '[host]:port' off port 22."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.device} ({self.user}@{self.hostname}:{self.port})"


def resolve(device) -> Target:
    config = {}
    if SSH_CONFIG.exists():
        config = paramiko.SSHConfig.from_path(str(SSH_CONFIG)).lookup(device.host)
    keys = [device.key] if device.key else config.get("identityfile", [])
    keys = tuple(str(Path(k).expanduser()) for k in keys)
    if device.key and not Path(keys[0]).is_file():
        raise DeviceError(f"device {device.name!r}: key file {keys[0]} does not exist",
                          "fix key: in the inventory, or remove it to use the ssh-agent")
    known = device.known_hosts or (config.get("userknownhostsfile") or "").split(" ")[0] \
        or DEFAULT_KNOWN_HOSTS
    return Target(device=device.name, hostname=config.get("hostname", device.host),
                  port=int(device.port or config.get("port", 22)),
                  user=device.user or config.get("user") or getpass.getuser(),
                  key_files=tuple(k for k in keys if Path(k).is_file()),
                  known_hosts=Path(known).expanduser(), timeout_s=device.connect_timeout_s)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's form: 'SHA256:' and the unpadded base64 of the key's SHA-256."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _describe(key: paramiko.PKey) -> str:
    return f"{key.get_name()} key {fingerprint(key)}"


def known_keys(target: Target, keys: paramiko.HostKeys | None = None) -> paramiko.HostKeys:
    """The system's and the device's known_hosts, read into `keys` (never written back)."""
    keys = paramiko.HostKeys() if keys is None else keys
    for path in (Path("/etc/ssh/ssh_known_hosts"), target.known_hosts):
        if path.is_file():
            keys.load(str(path))
    return keys


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, target: Target):
        self.target = target

    def missing_host_key(self, client, hostname, key):
        raise HostKeyRefused(
            f"device {self.target.device!r}: host key of {self.target.host_key_name} is not "
            f"trusted ({_describe(key)}); nothing was run on it",
            f"check the fingerprint, then run `farm devices trust {self.target.device}`")


def _open_socket(target: Target) -> socket.socket:
    try:
        sock = socket.create_connection((target.hostname, target.port), timeout=target.timeout_s)
    except OSError as error:
        raise DeviceUnreachable(
            f"cannot reach {target}: {error.strerror or error}",
            "check host:/port: in the inventory and that the board is up and on the network "
            f"(`farm devices check {target.device}`)") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3),
                          ("TCP_USER_TIMEOUT", DEAD_PEER_S * 1000)):
        if hasattr(socket, option):  # Linux; elsewhere paramiko's keepalive still runs
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    return sock


def connect(device) -> Board:
    target = resolve(device)
    client = paramiko.SSHClient()
    known_keys(target, client.get_host_keys())
    client.set_missing_host_key_policy(_RefuseUnknown(target))
    sock = _open_socket(target)
    try:
        client.connect(target.hostname, target.port, username=target.user, sock=sock,
                       key_filename=list(target.key_files) or None, allow_agent=True,
                       look_for_keys=not target.key_files, timeout=target.timeout_s,
                       banner_timeout=target.timeout_s, auth_timeout=target.timeout_s)
    except HostKeyRefused:
        sock.close()
        raise
    except paramiko.BadHostKeyException as error:
        sock.close()
        raise HostKeyRefused(
            f"device {target.device!r}: HOST KEY CHANGED for {target.host_key_name}: it presents "
            f"{_describe(error.key)}, but {target.known_hosts} pins "
            f"{_describe(error.expected_key)}; nothing was run on it",
            "if the board was reinstalled, check the new fingerprint and run "
            f"`farm devices trust {target.device}`; otherwise someone may be in the middle") from None
    except paramiko.AuthenticationException as error:
        sock.close()
        raise DeviceError(
            f"device {target.device!r}: authentication as {target.user} on "
            f"{target.hostname}:{target.port} failed: {error}",
            "check user: and key: in the inventory, or add the key to the ssh-agent (ssh-add)") \
            from None
    except (paramiko.SSHException, OSError, EOFError) as error:
        sock.close()
        raise DeviceUnreachable(f"cannot open SSH to {target}: {error or type(error).__name__}",
                                "check that sshd runs on the board and port: is right") from None
    client.get_transport().set_keepalive(KEEPALIVE_S)
    return Board(client, target)


def fetch_host_key(target: Target) -> paramiko.PKey:
    """The key the board presents, read without logging in. Where a key is pinned, its type is
    asked for first (as a login does), so that a board offering several keys is compared like
    for like."""
    pinned = pinned_key(target)
    sock = _open_socket(target)
    transport = paramiko.Transport(sock)
    if pinned is not None:
        options = transport.get_security_options()
        wanted = [pinned.get_name()]
        if pinned.get_name() == "ssh-rsa":  # RSA keys are negotiated under their SHA-2 names
            wanted = ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
        options.key_types = [t for t in wanted if t in options.key_types] + \
            [t for t in options.key_types if t not in wanted]
    try:
        transport.start_client(timeout=target.timeout_s)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as error:
        raise DeviceUnreachable(f"cannot read the host key of {target}: {error}",
                                "check that sshd runs on the board and port: is right") from None
    finally:
        transport.close()


def pinned_key(target: Target) -> paramiko.PKey | None:
    entry = known_keys(target).lookup(target.host_key_name)
    return next(iter(entry.values()), None) if entry else None


def pin(target: Target, key: paramiko.PKey) -> None:
    """Make `key` the one known_hosts accepts for this board (earlier keys for it removed)."""
    path = target.known_hosts
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    kept = [line for line in lines if not _names_host(line, target.host_key_name)]
    kept.append(f"{target.host_key_name} {key.get_name()} {key.get_base64()}\n")
    temporary = path.with_name(path.name + ".farm-new")
    temporary.write_text("".join(kept))
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def _names_host(line: str, name: str) -> bool:
    fields = line.split()
    if not fields or line.lstrip().startswith("#"):
        return False
    for pattern in fields[0].split(","):
        if pattern.startswith("|1|"):  # hashed names: compare by hashing ours with its salt
            if paramiko.HostKeys.hash_host(name, pattern) == pattern:
                return True
        elif pattern == name:
            return True
    return False


class Board:
    """A logged-in SSH connection to one board: commands, and files over SFTP (a Host)."""

    def __init__(self, client: paramiko.SSHClient, target: Target):
        self.client, self.target = client, target
        self.name = str(target)
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()  # one SFTP channel, used from the runner and cancel()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
            except (paramiko.SSHException, OSError, EOFError) as error:
                raise DeviceUnreachable(f"cannot open SFTP on {self.name}: {error}",
                                        "the board's sshd needs its sftp subsystem") from None
        return self._sftp

    @property
    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def run(self, command: str, timeout_s: float = 60) -> tuple[int, str, str]:
        """Run a shell command on the board; (exit status, stdout, stderr)."""
        try:
            channel = self.client.get_transport().open_session(timeout=self.target.timeout_s)
            channel.settimeout(timeout_s)
            channel.exec_command(command)
            out, err = channel.makefile("rb").read(), channel.makefile_stderr("rb").read()
            code = channel.recv_exit_status()
            channel.close()
        except (paramiko.SSHException, OSError, EOFError, AttributeError) as error:
            raise DeviceUnreachable(f"lost {self.name} while running a command: "
                                    f"{error or type(error).__name__}") from None
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    def home_path(self, path: str) -> str:
        """A remote path with '~' made absolute (SFTP does not expand it)."""
        if path == "~" or path.startswith("~/"):
            with self._files() as sftp:
                home = sftp.normalize(".")
            return posixpath.join(home, path[2:]) if path != "~" else home
        return path

    @contextlib.contextmanager
    def _files(self):
        """The SFTP channel, one caller at a time; a dead link is an OSError like the others."""
        with self._lock:
            try:
                yield self.sftp
            except (paramiko.SSHException, EOFError) as error:
                raise ConnectionError(f"SFTP to {self.name}: {error or 'closed'}") from None

    # farm.hosts.Host, over SFTP: paramiko raises OSError subclasses as the os module does.
    def read_text(self, path: str) -> str:
        with self._files() as sftp, sftp.open(path, "r") as f:
            return f.read().decode()

    def write_text(self, path: str, text: str) -> None:
        with self._files() as sftp, sftp.open(path, "w") as f:
            f.write(text)

    def exists(self, path: str) -> bool:
        try:
            with self._files() as sftp:
                sftp.stat(path)
            return True
        except FileNotFoundError:
            return False

    def is_dir(self, path: str) -> bool:
        try:
            with self._files() as sftp:
                return stat.S_ISDIR(sftp.stat(path).st_mode)
        except FileNotFoundError:
            return False

    def mkdir(self, path: str) -> None:
        current = "/" if path.startswith("/") else ""
        for part in (p for p in path.split("/") if p):
            current = posixpath.join(current, part) if current else part
            if not self.is_dir(current):
                with self._files() as sftp:
                    sftp.mkdir(current)

    def rmdir(self, path: str) -> None:
        with self._files() as sftp:
            sftp.rmdir(path)

    def list_dir(self, path: str) -> list[str]:
        with self._files() as sftp:
            return sftp.listdir(path)

    def open_rw(self, path: str) -> IO[str]:
        with self._files() as sftp:
            return sftp.open(path, "r+")

    def rename(self, old: str, new: str) -> None:
        with self._files() as sftp:
            sftp.posix_rename(old, new)

    def put(self, local: str, remote: str) -> None:
        """Copy a file with its permission bits (never wider than this host's copy): they are
        set on the empty file, before any byte is written, so that no reader ever sees the
        content under the board's default 0644."""
        mode = stat.S_IMODE(os.stat(local).st_mode) & 0o777
        with self._files() as sftp, open(local, "rb") as source, sftp.open(remote, "wb") as f:
            f.chmod(mode)
            f.set_pipelined(True)
            for block in iter(lambda: source.read(32768), b""):
                f.write(block)

    def kill(self, pids: list[int]) -> None:
        if pids:
            self.run(f"kill -9 {' '.join(str(int(p)) for p in pids)} 2>/dev/null; true", 15)

    def close(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:
                pass
        self.client.close()

    def start(self, argv: list[str]) -> RemoteProcess:
        """farm.hosts.Host's start: a command on its own channel, ended with it."""
        import shlex
        return RemoteProcess(self, shlex.join(argv))


class RemoteProcess:
    """A command started on a board, shaped like subprocess.Popen for farm.devices.session.

    The command runs under a small shell that first prints its pid and process group, and stays
    as the parent so that its exit status says how the command ended (128+N: killed by signal
    N). kill() ends the whole process group from a second channel.
    """

    def __init__(self, board: Board, command: str, start_timeout_s: float = 60):
        self.board = board
        wrapper = ("echo $$ $(cut -d' ' -f5 /proc/$$/stat); " + command + "; exit $?")
        try:
            self.channel = board.client.get_transport().open_session(timeout=30)
            self.channel.exec_command(wrapper)
        except (paramiko.SSHException, OSError, EOFError, AttributeError) as error:
            raise DeviceUnreachable(f"cannot start the agent on {board.name}: {error}") from None
        self.stdin = self.channel.makefile_stdin("wb")
        self.stdout = self.channel.makefile("r")
        self.stderr = self.channel.makefile_stderr("r")
        self.channel.settimeout(start_timeout_s)
        try:
            first = self.stdout.readline().split()
            self.pid, self.pgid = int(first[0]), int(first[1])
        except (socket.timeout, ValueError, IndexError):
            self.pid = self.pgid = None
        self.channel.settimeout(None)
        self.returncode: int | None = None

    @property
    def lost(self) -> str | None:
        """Why the connection itself ended (the board or the network went away), if it did."""
        if self.board.alive:
            return None
        return f"the SSH connection to {self.board.target.hostname}:{self.board.target.port} closed"

    def poll(self) -> int | None:
        if self.returncode is None and self.channel.exit_status_ready():
            status = self.channel.recv_exit_status()
            if status >= 0:
                self.returncode = -(status - 128) if status > 128 else status
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if self.channel.closed or self.lost:
                return self.returncode  # no status: killed with its shell, or connection lost
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"remote process {self.pid} still running")
            time.sleep(0.05)
        return self.returncode

    def kill(self) -> None:
        if self.pgid is not None and self.board.alive:
            try:
                self.board.kill([-self.pgid])  # the agent's whole process group
            except DeviceUnreachable:
                pass
        self.channel.close()
