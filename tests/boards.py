"""Stand-in Jetson boards for tests: each one a real OpenSSH sshd on 127.0.0.1, on a free port,
with host and client keys made here. Sessions on it get the fakes of the Jetson-only tools
(tegrastats, nvpmodel, jetson_clocks) first on PATH; everything else is this machine's own.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

FAKES = Path(__file__).resolve().parent / "fakes"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def sshd_problem() -> str | None:
    if not Path(SSHD).exists():
        return "OpenSSH's sshd is not installed (apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed (apt-get install openssh-client)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "farm-test",
                    "-f", str(path)], check=True)
    return path


@dataclass
class Board:
    name: str
    port: int
    home: Path  # the board's state: config, keys, workdir
    client_key: Path
    env: dict
    process: subprocess.Popen | None = None
    host_key: Path = field(init=False)

    def __post_init__(self):
        self.host_key = self.home / "ssh_host_ed25519_key"

    @property
    def workdir(self) -> Path:
        return self.home / "work"

    def inventory_entry(self, known_hosts: Path, python: str, **extra) -> dict:
        return {"name": self.name, "kind": "jetson", "host": "127.0.0.1", "port": self.port,
                "user": os.environ.get("USER") or "root", "key": str(self.client_key),
                "known_hosts": str(known_hosts), "python": python,
                "workdir": str(self.workdir), **extra}

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.host_key.exists():
            keygen(self.host_key)
        authorized = self.home / "authorized_keys"
        authorized.write_text(Path(str(self.client_key) + ".pub").read_text())
        path = f"{FAKES}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        setenv = " ".join(f"{k}={v}" for k, v in {"PATH": path, **self.env}.items())
        config = self.home / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {self.home / 'sshd.pid'}", f"AuthorizedKeysFile {authorized}",
            "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            "StrictModes no", "UsePAM no", "Subsystem sftp internal-sftp", f"SetEnv {setenv}",
            "LogLevel ERROR", ""]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                        stderr=open(self.home / "sshd.log", "ab"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.home / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"sshd on port {self.port} did not answer")

    def stop(self) -> None:
        """Stop sshd and every session it started (agents included), by their ids."""
        if self.process is None:
            return
        sessions = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                                  text=True).stdout.split()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in sessions:
            for child in _tree(int(pid)):
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process = None

    def agent_pids(self) -> list[int]:
        """Agents running from this board's workdir (their cwd is the uploaded agent)."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cwd = os.readlink(proc / "cwd")
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cwd.startswith(str(self.workdir)) and b"agents" in argv and b"-m" in argv:
                found.append(int(proc.name))
        return found


def _tree(pid: int) -> list[int]:
    out = [pid]
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                              text=True).stdout.split()
    for child in children:
        out.extend(_tree(int(child)))
    return out


def make_boards(root: Path, names: list[str], envs: list[dict] | None = None) -> list[Board]:
    client_key = root / "client_ed25519"
    if not client_key.exists():
        keygen(client_key)
    boards = []
    for i, name in enumerate(names):
        env = (envs or [{}] * len(names))[i]
        boards.append(Board(name, _free_port(), root / name, client_key, env))
    return boards
