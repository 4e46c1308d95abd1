"""The inventory: plain, frozen descriptions of devices (what runs jobs on them is farm.devices).

    devices:
      - name: nano-emu-1      # unique
        kind: cgroup          # cgroup | local | jetson
        memory: 2GiB          # memory limit of the container; swap off inside it
        cpus: 1               # CPU allowance (CFS quota); torch threads follow it
        node: null            # optional Ray node (IP or node id) to place the device on
        cuda: false           # whether jobs may use a CUDA GPU here (fp16 needs one)
        python: null          # the interpreter that runs the agent (default: farm's own)
        tags: [nano-2gb, emulated]
      - name: nano-01
        kind: jetson          # a board reached over SSH (paramiko); the agent is uploaded to it
        host: nano-01.lab     # a name, an address, or a Host alias from ~/.ssh/config
        port: 22              # default: ~/.ssh/config's, else 22
        user: farm            # default: ~/.ssh/config's, else your login name
        key: ~/.ssh/farm_ed25519   # default: ~/.ssh/config's IdentityFile, and the ssh-agent
        known_hosts: null     # where host keys are pinned (default ~/.ssh/known_hosts)
        python: /usr/bin/python3   # the board's interpreter with torch
        memory: null          # run the agent in a cgroup of this size on the board
        cpus: null            # torch threads (and, with memory:, the CPU quota); default: all
        workdir: ~/.cache/farm     # where the agent is kept on the board
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, field_validator,
                      model_validator)

from farm.config import Problem, load_spec

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)


def parse_size(value) -> int:
    """'2GiB' -> 2147483648. KiB/MiB/GiB are powers of 2; kB/MB/GB powers of 10; a bare number is bytes."""
    if isinstance(value, bool):
        raise Problem(f"{value!r} is not a memory size", "write a size like 2GiB or 512MiB")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise Problem(f"{value!r} is not a memory size", "write a size like 2GiB or 512MiB")
        size = int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])
    if size < 16 * 2**20:
        raise Problem(f"{value!r} is below 16 MiB, too small to start Python",
                      "write a size like 2GiB or 512MiB")
    return size


MemorySize = Annotated[int, BeforeValidator(parse_size)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class _Device(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    tags: tuple[Name, ...] = ()
    node: str | None = None
    cuda: bool = False
    python: str | None = None


class CgroupDevice(_Device):
    kind: Literal["cgroup"]
    memory: MemorySize
    cpus: float = Field(1.0, gt=0)


class LocalDevice(_Device):
    kind: Literal["local"]
    cpus: float | None = Field(None, gt=0)


class JetsonDevice(_Device):
    kind: Literal["jetson"]
    host: Annotated[str, Field(min_length=1)]
    port: int | None = Field(None, gt=0, lt=65536)
    user: str | None = None
    key: str | None = None
    known_hosts: str | None = None
    memory: MemorySize | None = None
    cpus: float | None = Field(None, gt=0)
    workdir: str = "~/.cache/farm"
    connect_timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _no_passwords(cls, data):
        if isinstance(data, dict) and {"password", "passphrase"} & set(data):
            raise Problem("a password does not belong in the inventory",
                          "remove it; use key: (a key file) or the ssh-agent")
        return data


Device = Annotated[Union[CgroupDevice, LocalDevice, JetsonDevice], Field(discriminator="kind")]


class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    devices: tuple[Device, ...] = Field(min_length=1)

    @field_validator("devices")
    @classmethod
    def _unique_names(cls, devices):
        seen = set()
        for device in devices:
            if device.name in seen:
                raise Problem(f"device name {device.name!r} appears twice",
                              "give every device its own name")
            seen.add(device.name)
        return devices

    def by_name(self) -> dict[str, Device]:
        return {d.name: d for d in self.devices}

    def pool(self, target: str) -> list[str]:
        """Devices a sweep target names: one device by name, or every device with that tag."""
        if target in self.by_name():
            return [target]
        return [d.name for d in self.devices if target in d.tags]


def load_inventory(path: str | Path) -> Inventory:
    return load_spec(path, Inventory)
