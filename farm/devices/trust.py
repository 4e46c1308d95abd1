"""`farm devices trust`: the host key a device reached over SSH presents, beside the one pinned
for it, and pinning it. Keys are never accepted on the fly: only here, after a person said yes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from farm.devices.kinds import kind_of, kinds
from farm.errors import ConfigError


@dataclass
class HostKeyOffer:
    """The key a board presents now, beside the one pinned for it (if any)."""
    device: str
    address: str
    known_hosts: Path
    key_type: str
    fingerprint: str
    pinned_fingerprint: str | None
    _target: object
    _key: object

    @property
    def state(self) -> str:
        if self.pinned_fingerprint is None:
            return "new"
        return "trusted" if self.pinned_fingerprint == self.fingerprint else "changed"


def offer(device, inventory_file: str) -> HostKeyOffer:
    """Read the key `device` presents (its kind must reach it over SSH)."""
    from farm.devices import ssh

    ssh_target = kind_of(device).ssh_target
    if ssh_target is None:
        over_ssh = ", ".join(k.name for k in kinds() if k.ssh_target)
        raise ConfigError(inventory_file, "devices", f"{device.name!r} is a {device.kind} "
                          "device, not reached over SSH", f"trust applies to kind: {over_ssh} "
                          "devices")
    target = ssh_target(device)
    key = ssh.fetch_host_key(target)
    pinned = ssh.pinned_key(target)
    return HostKeyOffer(device.name, target.host_key_name, target.known_hosts, key.get_name(),
                        ssh.fingerprint(key), pinned and ssh.fingerprint(pinned), target, key)


def pin(offered: HostKeyOffer) -> None:
    """Pin the offered key in the device's known_hosts file (replacing any earlier one)."""
    from farm.devices import ssh
    ssh.pin(offered._target, offered._key)
