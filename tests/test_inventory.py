import pytest

from farm.errors import ConfigError
from farm.inventory import CgroupDevice, load_inventory, parse_size
from farm.config import Problem


@pytest.mark.parametrize("text, size", [
    ("2GiB", 2 * 2**30), ("512MiB", 512 * 2**20), ("512mib", 512 * 2**20), ("1.5GiB", 3 * 2**29),
    ("2G", 2 * 10**9), ("2GB", 2 * 10**9), ("100M", 100 * 10**6), (2**30, 2**30)])
def test_memory_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["2XB", "lots", "-1GiB", "1KiB", True])
def test_bad_memory_sizes(text):
    with pytest.raises(Problem):
        parse_size(text)


def test_default_inventory_has_two_emulated_nanos():
    from conftest import REPO
    inventory = load_inventory(REPO / "inventory.yaml")
    nanos = [d for d in inventory.devices if isinstance(d, CgroupDevice)]
    assert [d.name for d in nanos] == ["nano-emu-1", "nano-emu-2"]
    assert all(d.memory == 2 * 2**30 and d.cpus == 1 for d in nanos)
    assert inventory.pool("nano-2gb") == ["nano-emu-1", "nano-emu-2"]


@pytest.mark.parametrize("body, field, line, words", [
    ("devices:\n  - {name: a, kind: cgroup, memory: 2XB}\n", "devices[0].memory", 2, "2GiB"),
    ("devices:\n  - {name: a, kind: cgroup, memory: 1GiB}\n  - {name: a, kind: local}\n",
     "devices", 2, "own name"),
    ("devices:\n  - {name: a, kind: phone}\n", "devices[0]", 2, "expected"),
    ("devices:\n  - name: a\n    kind: cgroup\n    memory: 1GiB\n    cpu: 2\n", "devices[0].cpu", 5,
     "remove this key"),
    ("devices:\n  - {name: a, kind: cgroup}\n", "devices[0].memory", 2, "add this key"),
    ("devices:\n  - {name: a, kind: cgroup, memory: 1GiB, cpus: 0}\n", "devices[0].cpus", 2,
     "larger"),
    ("devices: [\n", "(yaml)", 2, "YAML"),
    ("devices:\n  - {name: n, kind: jetson}\n", "devices[0].host", 2, "add this key"),
    ("devices:\n  - {name: n, kind: jetson, host: h, password: hunter2}\n", "devices[0]", 2,
     "ssh-agent"),
    ("devices:\n  - {name: n, kind: jetson, host: h, port: 70000}\n", "devices[0].port", 2,
     "less than"),
    ("- a\n- b\n", "(top level)", 1, "mapping"),
])
def test_errors_name_file_line_field_and_fix(write_yaml, body, field, line, words):
    path = write_yaml("inventory.yaml", body)
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    error = caught.value
    assert (error.file, error.field, error.line) == (str(path), field, line)
    assert words in str(error)
    assert error.exit_code == 2


def test_a_jetson_entry_with_defaults(write_yaml):
    inventory = load_inventory(write_yaml("inventory.yaml", (
        "devices:\n  - {name: nano-01, kind: jetson, host: nano-01.lab, memory: 1GiB, "
        "tags: [nano-2gb]}\n")))
    board, = inventory.devices
    assert (board.kind, board.host, board.port, board.memory, board.workdir) == \
        ("jetson", "nano-01.lab", None, 2**30, "~/.cache/farm")
    assert inventory.pool("nano-2gb") == ["nano-01"]
