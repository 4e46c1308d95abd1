"""What every kind of device gives farm (Kind), and what every inventory entry shares
(DeviceDescription, with the inventory's names and memory sizes)."""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Callable

from pydantic import BaseModel, ConfigDict, Field

# Memory sizes are read, and bounded, with the inventory's other numbers.
from farm.limits import MemorySize, parse_size  # noqa: F401

if TYPE_CHECKING:
    from farm.devices import DeviceRunner
    from farm.devices.health import Check
    from farm.devices.ssh import Target

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class DeviceDescription(BaseModel):
    """An inventory entry: where a device is and what it offers, nothing that acts on it. Each
    kind adds `kind: Literal["<its name>"]` and its own keys; unknown keys are refused."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    tags: tuple[Name, ...] = ()
    # The Ray node that hosts the device: its id, its name (ray start --node-name) or its IP
    node: str | None = None
    cuda: bool = False  # jobs may use a CUDA GPU here
    python: str | None = None  # the interpreter that runs the agent


def here_or_its_node(device) -> str:
    return f"Ray node {device.node}" if device.node else "this host"


def unless_pinned(device) -> bool:
    return device.node is None  # pinned to a Ray node: that node's host holds it


@dataclass(frozen=True)
class Kind:
    """What one kind of device gives farm. A kind module ends with `KIND = Kind(...)`."""

    # The inventory entry, a DeviceDescription with `kind: Literal["<name>"]`.
    description: type[DeviceDescription]
    # A DeviceRunner for one device: prepare it, run jobs on it, cancel, close.
    runner: Callable[[Any], DeviceRunner]
    # `farm devices check`: what the device offers, read from the device itself.
    check: Callable[[Any], list[Check]]
    # The "where" of `farm devices`: a host name, a serial number...
    where: Callable[[Any], str] = here_or_its_node
    # For a device reached over SSH: its farm.devices.ssh.Target, whose host key `farm devices
    # trust` pins. None: trust does not apply.
    ssh_target: Callable[[Any], Target] | None = None
    # For a device with clocks to lock: from the facts its runner's prepare() returned, why
    # `require_locked_clocks: true` refuses it ("are not locked") and the fix, or None when its
    # clocks are locked. None: the setting does not apply to this kind.
    clocks_unlocked: Callable[[dict], tuple[str, str] | None] | None = None
    # For devices that share this host's CPUs: (the run's devices of this kind, each with the
    # CPUs it is pinned to, what the user must hear before anything runs). None: no sharing.
    place: Callable[[list], tuple[list, list[tuple[str, str]]]] | None = None
    # Whether the device's lock (farm.devices.lock) lives on the host farm runs on, so that a
    # farm can see another's hold before it starts Ray (a board's lives on the board).
    locked_here: Callable[[Any], bool] = unless_pinned

    def __post_init__(self):
        if not (isinstance(self.description, type)
                and issubclass(self.description, DeviceDescription)):
            raise TypeError(f"{self.description!r} is not a DeviceDescription subclass")
        field = self.description.model_fields.get("kind")
        if field is None or typing.get_origin(field.annotation) is not typing.Literal \
                or len(typing.get_args(field.annotation)) != 1:
            raise TypeError(f"{self.description.__name__} needs a field "
                            "kind: Literal[\"<the kind's name>\"]")

    @property
    def name(self) -> str:
        """The inventory's `kind:` value, as the description declares it."""
        return typing.get_args(self.description.model_fields["kind"].annotation)[0]
