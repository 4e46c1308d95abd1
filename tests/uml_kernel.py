"""A real cgroup v2 kernel for tests: user-mode Linux 6.1, booted as a process of this machine.

CI runs cgroup v1; most users run v2. `make uml-kernel` builds Linux 6.1 for user mode from
Debian's linux-source-6.1 (tests/uml/build-kernel.sh, with tests/uml/xstate.patch so that it
starts on hosts with AMX) into a cache folder outside the clone, named by the hash of the files
that make it. boot() starts it with this machine's filesystem as its root (hostfs) and an init
script that mounts proc, sysfs, cgroup2 on /sys/fs/cgroup, tmpfs on /tmp and /dev/shm, brings up
lo, runs the given shell commands in the repository as root, and powers off. What the commands
write under /mnt comes back in `out` (the folder is mounted there); their output and exit status
come back as /mnt/console.log and /mnt/rc.

Inside, `as_user` runs a command as a user that is not root (uid 1000, no capabilities):
folders on the way to the interpreter and the repository that only root may enter (/root, where
pyenv lives) are shown to it through bind mounts inside the kernel, never changed on the host.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = REPO / "tests" / "uml"
KERNEL_ENV = "FARM_UML_KERNEL"
USER_ID = 1000


def kernel_dir() -> Path:
    digest = hashlib.sha1()
    for name in ("build-kernel.sh", "kernel.config", "xstate.patch"):
        digest.update((SOURCES / name).read_bytes())
    return Path.home() / ".cache" / "farm" / "uml" / f"linux-6.1-{digest.hexdigest()[:12]}"


def kernel() -> Path:
    return Path(os.environ.get(KERNEL_ENV) or kernel_dir() / "linux.uml")


def problem() -> str | None:
    """Why no cgroup v2 kernel can be booted here, or None."""
    if sys.platform != "linux":
        return "user-mode Linux runs on Linux hosts only"
    if not kernel().is_file():
        return f"no user-mode Linux kernel at {kernel()}: run `make uml-kernel`"
    return None


@dataclass
class Booted:
    rc: int | None  # the commands' exit status (None: they never finished)
    console: str  # what the commands printed
    kernel_log: str  # what the kernel printed (boot, panics, OOM kills)


def _hidden_ancestors(paths: list[Path]) -> list[tuple[Path, str]]:
    """(folder, child) for each folder on the way to `paths` that others may not enter."""
    hidden = []
    for path in paths:
        parts = path.parts
        for i in range(1, len(parts) - 1):
            folder = Path(*parts[: i + 1])
            if not os.stat(folder).st_mode & 0o001 and (folder, parts[i + 1]) not in hidden:
                hidden.append((folder, parts[i + 1]))
    return hidden


def _through_tmp(paths: list[Path]) -> list[str]:
    """Mount a fresh tmpfs on /tmp, keeping visible what of `paths` lives under the host's
    /tmp (a clone there, its virtual environment)."""
    kept = sorted({Path(*p.parts[:3]) for p in paths if p.parts[1:2] == ("tmp",)
                   and len(p.parts) > 2})
    lines = []
    for n, path in enumerate(kept):
        lines += [f"mkdir -p /run/farm-uml-tmp/{n}",
                  f"mount --bind {shlex.quote(str(path))} /run/farm-uml-tmp/{n}"]
    lines.append("mount -t tmpfs tmpfs /tmp")
    for n, path in enumerate(kept):
        lines += [f"mkdir -p {shlex.quote(str(path))}",
                  f"mount --bind /run/farm-uml-tmp/{n} {shlex.quote(str(path))}"]
    return lines


def _init_script(commands: str, out: Path) -> str:
    python = Path(os.path.realpath(sys.executable))
    reveal = []
    for n, (folder, child) in enumerate(_hidden_ancestors([python, REPO])):
        keep = f"/run/farm-uml-keep/{n}"
        reveal += [f"mkdir -p {keep}", f"mount --bind {shlex.quote(str(folder / child))} {keep}",
                   f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(str(folder))}",
                   f"mkdir -p {shlex.quote(str(folder / child))}",
                   f"mount --bind {keep} {shlex.quote(str(folder / child))}"]
    return "\n".join([
        "#!/bin/sh",
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "mount -t proc proc /proc",
        "mount -t sysfs sysfs /sys",
        "mount -t cgroup2 none /sys/fs/cgroup",
        f"mount -t hostfs none /mnt -o {shlex.quote(str(out))}",
        "mount -t tmpfs tmpfs /run",
        *_through_tmp([REPO, python]),
        "mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm",
        "ip link set lo up",
        *reveal,
        "export HOME=/tmp/home TMPDIR=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1",
        "mkdir -p $HOME && chmod 1777 /tmp",
        f"as_user() {{ setpriv --reuid={USER_ID} --regid={USER_ID} --clear-groups "
        f"--inh-caps=-all env HOME=/tmp/user-home \"$@\"; }}",
        f"cd {shlex.quote(str(REPO))}",
        f"( {commands}\n) > /mnt/console.log 2>&1 < /dev/null",
        "echo $? > /mnt/rc",
        "poweroff -f",
        ""])


class Kernel:
    """A booted kernel running `commands`; wait() gives what they left."""

    def __init__(self, commands: str, out: Path, memory: str = "3G"):
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        init = out / "init.sh"
        init.write_text(_init_script(commands, out))
        init.chmod(0o755)
        argv = [str(kernel()), f"mem={memory}", "rootfstype=hostfs", "rootflags=/", "rw",
                f"init={init}", "con=null", "con0=fd:0,fd:1", f"uml_dir={out}"]
        # Its own session: stop() kills the kernel and every host thread it made at once.
        with open(out / "kernel.log", "w") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, 9)
        except ProcessLookupError:
            pass
        self.process.wait()

    def wait(self, timeout: float) -> Booted:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
        out = self.out
        rc_file, console = out / "rc", out / "console.log"
        return Booted(rc=int(rc_file.read_text()) if rc_file.exists() else None,
                      console=console.read_text(errors="replace") if console.exists() else "",
                      kernel_log=(out / "kernel.log").read_text(errors="replace"))


def boot(commands: str, out: Path, memory: str = "3G", timeout: float = 1200) -> Booted:
    """Boot the kernel, run `commands` (sh) in the repository as root, and power off."""
    return Kernel(commands, out, memory).wait(timeout)


def build() -> int:
    """`make uml-kernel`: build the kernel unless it is there; as root, install what the build
    needs from Debian's packages first."""
    target = kernel_dir() / "linux.uml"
    if target.is_file():
        print(f"user-mode Linux kernel: {target}")
        return 0
    if sys.platform != "linux":
        print("note: user-mode Linux needs a Linux host; the cgroup v2 tests will not run")
        return 0
    needed = ["linux-source-6.1", "flex", "bison", "bc"]
    have = subprocess.run(["dpkg-query", "-W", "-f=${Status}\\n", *needed],
                          capture_output=True, text=True)
    if have.stdout.count("install ok installed") < len(needed):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            print(f"note: apt-get install {' '.join(needed)} (as root) to build the kernel for "
                  "the cgroup v2 tests; they will not run")
            return 0
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", *needed]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
            subprocess.run(install, env=env, capture_output=True, check=True)
    print(f"building user-mode Linux 6.1 into {target.parent} (about 4 minutes on 2 cores)")
    return subprocess.run(["sh", str(SOURCES / "build-kernel.sh"), str(target.parent)]).returncode


if __name__ == "__main__":
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python tests/uml_kernel.py build")
    sys.exit(build())
