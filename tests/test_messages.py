"""What a refused sweep or inventory says: where (file:line), what is wrong in the user's words,
and the fix, with a guess where a misspelling has one."""
from __future__ import annotations

import pytest

from farm.errors import ConfigError
from farm.inventory import load_inventory
from farm.sweep import load_sweep, resolve_targets

SWEEP = "name: s\nmodels: [bert-tiny]\n"


def _refused(load, path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    return caught.value


@pytest.mark.parametrize("text, line, words", [
    (SWEEP + "measure:\n\twarmup: 3\n", 4, "a tab in the indentation (indent with spaces, not tabs)"),
    (SWEEP + "measure:\n  warmup: 3\n \tmin_iters: 4\n", 5, "indent with spaces, not tabs"),
    (SWEEP + "timeout_s:\t60\n", 3, "a tab after 'timeout_s:' (write a space instead)"),
])
def test_a_tab_says_where_and_what_to_write(write_yaml, text, line, words):
    path = write_yaml("sweep.yaml", text)
    error = _refused(load_sweep, path)
    assert str(error).startswith(f"{path}:{line}: (yaml): ")
    assert words in str(error)


@pytest.mark.parametrize("text, field, words", [
    (SWEEP + "batch_size: [1]\n", "batch_size",
     "unknown key batch_size (did you mean batch_sizes? Otherwise remove this key)"),
    (SWEEP + "measure: {warmpu: 3}\n", "measure.warmpu", "did you mean warmup?"),
    ("name: s\nmodels: [{name: mine, pth: ckpt}]\n", "models[0].pth", "did you mean path?"),
    (SWEEP + "bogus: 1\n", "bogus", "remove this key, or use one of: name, devices, models"),
    ("name: s\nmodels: [bert-tiyn]\n", "models", "did you mean bert-tiny?"),
    (SWEEP + "tasks: [sst-2]\n", "tasks", "did you mean sst2?"),
    (SWEEP + "variants: [int-8]\n", "variants[0]", "did you mean int8?"),
    (SWEEP + "variants: [{name: h, prune_head: 0.5}]\n", "variants[0].prune_head",
     "did you mean prune_heads?"),
    (SWEEP + "variants: [{name: h, precision: fp61}]\n", "variants[0].precision",
     "did you mean fp16?"),
    (SWEEP + "variants: [{name: m, magnitude: {sparsty: 0.5}}]\n",
     "variants[0].magnitude.sparsty", "did you mean sparsity?"),
])
def test_a_misspelt_sweep_name_gets_a_guess(write_yaml, text, field, words):
    error = _refused(load_sweep, write_yaml("sweep.yaml", text))
    assert error.field == field
    assert words in str(error)


@pytest.mark.parametrize("text, field, words", [
    # A misspelt required key is reported as the misspelling, not as the key it left missing.
    ("devices:\n  - {name: a, kind: cgroup, memroy: 1GiB}\n", "devices[0].memroy",
     "unknown key memroy (did you mean memory?"),
    ("devices:\n  - name: a\n    kind: local\n    cpu: 2\n", "devices[0].cpu",
     "did you mean cpus?"),
    ("devices:\n  - {name: a, kind: cgrop, memory: 1GiB}\n", "devices[0]",
     "unknown kind 'cgrop': expected cgroup, local or jetson (did you mean cgroup?)"),
    ("devices:\n  - {name: a, kind: local}\ndevice: []\n", "device", "did you mean devices?"),
])
def test_a_misspelt_inventory_name_gets_a_guess(write_yaml, text, field, words):
    error = _refused(load_inventory, write_yaml("inventory.yaml", text))
    assert error.field == field
    assert words in str(error)


def test_a_misspelt_target_gets_a_guess(write_yaml):
    inventory = load_inventory(write_yaml("inventory.yaml", (
        "devices:\n  - {name: emu-1, kind: local, tags: [nano-2gb]}\n")))
    sweep = load_sweep(write_yaml("sweep.yaml", SWEEP + "devices: [nano-2g]\n"))
    with pytest.raises(ConfigError) as caught:
        resolve_targets(sweep, inventory, "sweep.yaml", "inventory.yaml")
    assert "did you mean nano-2gb?" in str(caught.value)


@pytest.mark.parametrize("name, problem", [
    ("my box", "'my box' holds ' '"), ("-a", "'-a' starts with '-'"), ("a/b", "'a/b' holds '/'")])
def test_a_name_pattern_is_said_in_words(write_yaml, name, problem):
    error = _refused(load_inventory, write_yaml(
        "inventory.yaml", f"devices:\n  - {{name: '{name}', kind: local}}\n"))
    assert error.field == "devices[0].name" and error.line == 2
    assert f"{problem} (use letters, digits, '_', '.' and '-', starting with a letter or a " \
           "digit)" in str(error)
    said = str(error).split(": devices[0].name: ", 1)[1]
    assert not any(w in said for w in ("^", "[", "pattern"))


def _memory(write_yaml, size) -> int:
    return load_inventory(write_yaml("inventory.yaml", (
        f"devices:\n  - {{name: a, kind: cgroup, memory: {size}}}\n"))).devices[0].memory


@pytest.mark.parametrize("size, exact", [
    ("512MiB", 512 * 2**20), ("512mib", 512 * 2**20), ("512Mi", 512 * 2**20),
    ("1GiB", 2**30), ("1gib", 2**30), ("500MB", 500 * 10**6), ("500M", 500 * 10**6),
    ("500000kB", 500 * 10**6), ("500000KB", 500 * 10**6), ("0.5GB", 500 * 10**6)])
def test_memory_units_read_as_written(write_yaml, size, exact):
    assert _memory(write_yaml, size) == exact


@pytest.mark.parametrize("size, readings, fix", [
    ("1gb", "GiB or GB", "write 1GiB (1024 MiB) or 1GB (954 MiB)"),
    ("512mb", "MiB or MB", "write 512MiB (512 MiB) or 512MB (488 MiB)"),
    ("1g", "GiB or GB", "write 1GiB (1024 MiB) or 1GB (954 MiB)"),
    ("1Gb", "GiB or GB", "write 1GiB (1024 MiB) or 1GB (954 MiB)"),
    ("1.5gb", "GiB or GB", "write 1.5GiB (1536 MiB) or 1.5GB (1431 MiB)"),
    ("100000kb", "KiB or kB", "write 100000KiB (98 MiB) or 100000kB (95 MiB)"),
])
def test_lowercase_decimal_units_are_refused_with_both_readings(write_yaml, size, readings,
                                                                 fix):
    error = _refused(load_inventory, write_yaml(
        "inventory.yaml", f"devices:\n  - {{name: a, kind: cgroup, memory: {size}}}\n"))
    assert error.field == "devices[0].memory" and error.line == 2
    assert str(error).endswith(f": {size!r} could mean {readings} ({fix})")


@pytest.mark.parametrize("argv, words", [
    (["submti", "sweep.yaml"], ("farm has no command submti", "did you mean submit?")),
    (["devices", "chek"], ("farm devices has no command chek", "did you mean check?")),
    (["submit", "--inventroy", "x.yaml", "sweep.yaml"],
     ("farm submit has no option --inventroy", "did you mean --inventory?")),
    (["--bogus"], ("farm has no option --bogus", "`farm --help` lists what it takes")),
])
def test_a_command_line_farm_cannot_read_is_one_line_with_a_guess(argv, words):
    from typer.testing import CliRunner

    from farm.cli import app

    result = CliRunner().invoke(app, argv, prog_name="farm")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 2 and "╭" not in result.output, result.output
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    for word in words:
        assert word in result.output
