"""The inventory: plain, frozen descriptions of devices (what runs jobs on them is farm.devices).

    devices:
      - name: nano-emu-1      # unique
        kind: cgroup          # cgroup | local | jetson (farm.devices.kinds)
        memory: 2GiB          # memory limit of the container; swap off inside it
        cpus: 1               # CPU allowance (CFS quota); torch threads follow it
        cores: null           # pinned to these CPUs (cpuset); default: cores of its own
        node: null            # optional Ray node (id, name or IP) to place the device on
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

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from farm.config import Problem, load_spec
from farm.devices.kinds import AnyDevice, holds_devices
# Each kind's description lives with its kind (farm.devices.kinds); importable from here too.
from farm.devices.kinds.base import DeviceDescription, Name  # noqa: F401
from farm.devices.kinds.cgroup import CgroupDevice  # noqa: F401
from farm.devices.kinds.jetson import JetsonDevice  # noqa: F401
from farm.devices.kinds.local import LocalDevice  # noqa: F401
from farm.limits import MemorySize, parse_size  # noqa: F401

Device = DeviceDescription  # a device of any kind


@holds_devices
class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    devices: tuple[AnyDevice, ...] = Field(min_length=1)

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
