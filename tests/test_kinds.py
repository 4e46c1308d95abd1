"""The registry of device kinds (farm.devices.kinds): a kind is one module's worth of
declarations, and nothing outside the registry needs to change to accept a new one."""
from __future__ import annotations

from typing import Literal

import pytest
from pydantic import ValidationError

from farm.devices import kinds, runner_for
from farm.devices.health import OK, Check, check
from farm.devices.kinds.base import DeviceDescription, Kind
from farm.errors import ConfigError
from farm.inventory import Inventory, load_inventory


class PhoneDevice(DeviceDescription):
    """A phone over adb, as a newcomer's module would describe one."""
    kind: Literal["phone"]
    serial: str


class PhoneRunner:
    """Enough of a DeviceRunner to be told apart; no job runs on it here."""
    def __init__(self, device):
        self.device = device


def _phone_check(device) -> list[Check]:
    return [Check("adb", OK, f"{device.serial} answers")]


PHONE = Kind(PhoneDevice, runner=PhoneRunner, check=_phone_check, where=lambda d: d.serial)


@pytest.fixture
def phone_kind():
    kinds.register(PHONE)
    yield PHONE
    kinds.unregister("phone")


def test_a_registered_kind_is_parsed_run_checked_and_located(phone_kind, write_yaml):
    path = write_yaml("inventory.yaml", (
        "devices:\n"
        "  - {name: pixel, kind: phone, serial: 0123ABC, tags: [phones]}\n"
        "  - {name: nano-emu, kind: cgroup, memory: 1GiB}\n"))
    inventory = load_inventory(path)
    phone = inventory.by_name()["pixel"]
    assert isinstance(phone, PhoneDevice) and phone.serial == "0123ABC"
    assert inventory.pool("phones") == ["pixel"]
    runner = runner_for(phone)
    assert isinstance(runner, PhoneRunner) and runner.device is phone
    assert check(phone) == [Check("adb", OK, "0123ABC answers")]
    assert kinds.kind_of(phone).where(phone) == "0123ABC"
    assert kinds.kind_of(phone).ssh_target is None  # `farm devices trust` refuses it
    # A stored inventory (farm resume) reads back the same.
    assert Inventory.model_validate_json(inventory.model_dump_json()) == inventory


def test_a_new_kinds_errors_name_the_line_and_field_as_the_users_file_has_them(phone_kind,
                                                                               write_yaml):
    path = write_yaml("inventory.yaml",
                      "devices:\n  - name: pixel\n    kind: phone\n    serial: 0123ABC\n    usb: 2\n")
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    assert (caught.value.field, caught.value.line) == ("devices[0].usb", 5)


def test_an_unregistered_kind_is_refused_again(write_yaml):
    kinds.register(PHONE)
    kinds.unregister("phone")
    path = write_yaml("inventory.yaml", "devices:\n  - {name: pixel, kind: phone, serial: x}\n")
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    assert "unknown kind 'phone': expected cgroup, local or jetson" in str(caught.value)


def test_a_kinds_name_is_its_descriptions_kind_literal():
    assert PHONE.name == "phone"
    assert {"cgroup", "local", "jetson"} <= set(kinds.names())
    with pytest.raises(TypeError, match="Literal"):
        Kind(DeviceDescription, runner=PhoneRunner, check=_phone_check)


def test_a_second_kind_of_the_same_name_is_refused(phone_kind):
    with pytest.raises(ValueError, match="registered already"):
        kinds.register(Kind(PhoneDevice, runner=PhoneRunner, check=lambda d: []))


@pytest.mark.parametrize("name", kinds.names())
def test_every_kinds_description_rejects_unknown_keys(name):
    description = next(k.description for k in kinds.kinds() if k.name == name)
    with pytest.raises(ValidationError) as caught:
        description.model_validate({"name": "d", "kind": name, "colour": "blue"})
    assert ("extra_forbidden", ("colour",)) in [(e["type"], e["loc"]) for e in caught.value.errors()]
