"""kind: jetson, a board reached over SSH (paramiko): the agent is uploaded to it and runs there
(farm.devices.jetson), its host key is pinned by `farm devices trust` (farm.devices.ssh), and its
clocks can be required locked."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from farm.config import Problem
from farm.devices.health import FAIL, OK, Check, container_check, facts_checks, skipped
from farm.devices.kinds.base import DeviceDescription, Kind, MemorySize
from farm.errors import DeviceError
from farm.limits import MAX_CPUS, Seconds, positive, whole


class JetsonDevice(DeviceDescription):
    kind: Literal["jetson"]
    host: Annotated[str, Field(min_length=1)]  # a name, an address, or a ~/.ssh/config Host
    port: whole(1, 65535) | None = None  # default: ~/.ssh/config's, else 22
    user: str | None = None  # default: ~/.ssh/config's, else your login name
    key: str | None = None  # default: ~/.ssh/config's IdentityFile, and the ssh-agent
    known_hosts: str | None = None  # where host keys are pinned (default ~/.ssh/known_hosts)
    memory: MemorySize | None = None  # run the agent in a cgroup of this size on the board
    cpus: positive(MAX_CPUS) | None = None  # torch threads (and with memory:, the CPU quota)
    workdir: str = "~/.cache/farm"  # where the agent is kept on the board
    connect_timeout_s: Seconds = 10.0

    @model_validator(mode="before")
    @classmethod
    def _no_passwords(cls, data):
        if isinstance(data, dict) and {"password", "passphrase"} & set(data):
            raise Problem("a password does not belong in the inventory",
                          "remove it; use key: (a key file) or the ssh-agent")
        return data


def jetson_runner(device: JetsonDevice):
    from farm.devices.jetson import JetsonRunner
    return JetsonRunner(device)


def check_board(device: JetsonDevice) -> list[Check]:
    """Reachable, host key pinned, login, agent upload, then what the agent reads on the board."""
    from farm.devices import ssh
    from farm.devices.jetson import board_python, deploy, probe

    checks = []
    try:
        target = ssh.resolve(device)
        key = ssh.fetch_host_key(target)
    except DeviceError as error:
        return [Check("reachable", FAIL, error.message)] + skipped("host key", "login", "agent")
    checks.append(Check("reachable", OK, f"{target.hostname}:{target.port}"))
    pinned = ssh.pinned_key(target)
    if pinned is None or pinned.asbytes() != key.asbytes():
        state = "not trusted" if pinned is None else "CHANGED since it was pinned"
        checks.append(Check("host key", FAIL, f"{key.get_name()} {ssh.fingerprint(key)} {state}; "
                            f"`farm devices trust {device.name}` pins it"))
        return checks + skipped("login", "agent")
    checks.append(Check("host key", OK, f"{key.get_name()} {ssh.fingerprint(key)} "
                        f"(pinned in {target.known_hosts})"))
    try:
        board = ssh.connect(device)
    except DeviceError as error:
        return checks + [Check("login", FAIL, error.message)] + skipped("agent")
    try:
        checks.append(Check("login", OK, f"as {target.user}"))
        try:
            folder, uploaded = deploy(board, device.workdir)
            checks.append(Check("agent", OK, f"{folder} ({'uploaded now' if uploaded else 'up to date'})"))
            facts = probe(board, board_python(device), folder, full=True)
        except DeviceError as error:
            return checks + [Check("agent", FAIL, error.message)]
        checks.extend(facts_checks(facts))
        checks.append(container_check(device, board))
    finally:
        board.close()
    return checks


def ssh_target(device: JetsonDevice):
    from farm.devices import ssh
    return ssh.resolve(device)


def clocks_unlocked(facts: dict) -> tuple[str, str] | None:
    """The board's CPUs and GPU pinned at MinFreq = MaxFreq (`jetson_clocks --show`, read when
    the board was prepared), or why not and the fix."""
    locked = facts.get("clocks_locked")
    if locked is True:
        return None
    seen = ("could not be read (jetson_clocks --show needs root or passwordless sudo)"
            if locked is None else "are not locked")
    return seen, "run `sudo jetson_clocks` on the board"


KIND = Kind(JetsonDevice, runner=jetson_runner, check=check_board, where=lambda d: d.host,
            ssh_target=ssh_target, clocks_unlocked=clocks_unlocked,
            locked_here=lambda _device: False)
