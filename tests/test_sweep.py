import pytest

from farm.errors import ConfigError
from farm.inventory import load_inventory
from farm.sweep import expand, load_sweep, resolve_targets

INVENTORY = """
devices:
  - {name: emu-1, kind: cgroup, memory: 2GiB, tags: [nano-2gb]}
  - {name: emu-2, kind: cgroup, memory: 2GiB, tags: [nano-2gb]}
  - {name: box, kind: local}
"""


def _sweep(write_yaml, **fields):
    data = {"name": "s", "models": ["bert-tiny"]} | fields
    return write_yaml("sweep.yaml", data)


def test_expansion_is_the_product_with_stable_keys(write_yaml):
    path = _sweep(write_yaml, devices=["nano-2gb", "box"], models=["bert-tiny", "bert-mini"],
                  variants=["fp32", "int8"], batch_sizes=[1, 8], seq_lens=[64, 128])
    sweep = load_sweep(path)
    jobs = expand(sweep, ["nano-2gb", "box"])
    assert len(jobs) == 2 * 2 * 2 * 2 * 2
    assert len({j.key for j in jobs}) == len(jobs)
    again = expand(load_sweep(path), ["nano-2gb", "box"])
    assert [j.key for j in again] == [j.key for j in jobs]


def test_key_changes_with_what_is_measured_only(write_yaml):
    base = expand(load_sweep(_sweep(write_yaml)), ["x"])[0]
    longer_timeout = expand(load_sweep(_sweep(write_yaml, timeout_s=5)), ["x"])[0]
    more_iters = expand(load_sweep(_sweep(write_yaml, measure={"min_iters": 50})), ["x"])[0]
    assert base.key == longer_timeout.key
    assert base.key != more_iters.key


def test_targets_are_names_or_tags(write_yaml):
    inventory = load_inventory(write_yaml("inventory.yaml", INVENTORY))
    sweep = load_sweep(_sweep(write_yaml, devices=["nano-2gb", "box"]))
    pools = resolve_targets(sweep, inventory, "sweep.yaml", "inventory.yaml")
    assert pools == {"nano-2gb": ["emu-1", "emu-2"], "box": ["box"]}
    everything = resolve_targets(load_sweep(_sweep(write_yaml)), inventory, "s", "i")
    assert everything == {"*": ["emu-1", "emu-2", "box"]}


def test_unknown_target_is_an_error_naming_the_choices(write_yaml):
    inventory = load_inventory(write_yaml("inventory.yaml", INVENTORY))
    sweep = load_sweep(_sweep(write_yaml, devices=["box", "nano-4gb"]))
    with pytest.raises(ConfigError) as caught:
        resolve_targets(sweep, inventory, "sweep.yaml", "inventory.yaml")
    assert caught.value.field == "devices[1]"
    assert "nano-4gb" in str(caught.value) and "nano-2gb" in str(caught.value)


@pytest.mark.parametrize("fields, field, words", [
    ({"models": ["bert-huge"]}, "models", "bert-tiny"),
    ({"variants": ["fp32", "int4"]}, "variants[1]", "int8"),
    ({"tasks": ["imagenet"]}, "tasks", "synthetic"),
    ({"batch_sizes": [1, 0]}, "batch_sizes[1]", "larger"),
    ({"measure": {"min_iters": 0}}, "measure.min_iters", "larger"),
    ({"batch_size": [1]}, "batch_size", "remove this key"),
    ({"models": [{"name": "mine", "path": "nowhere"}]}, "models[0].path", "config.json"),
])
def test_bad_sweeps_are_refused(write_yaml, fields, field, words):
    path = _sweep(write_yaml, **fields)
    with pytest.raises(ConfigError) as caught:
        load_sweep(path)
    assert caught.value.field == field
    assert caught.value.file == str(path)
    assert words in str(caught.value)


def test_local_checkpoint_paths_resolve_against_the_sweep_file(write_yaml, tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    sweep = load_sweep(_sweep(write_yaml, models=[{"name": "mine", "path": "ckpt"}]))
    assert sweep.models[0].path == str(tmp_path / "ckpt")


def test_fp16_is_refused_where_a_device_has_no_cuda(write_yaml):
    inventory = load_inventory(write_yaml("inventory.yaml", """
devices:
  - {name: gpu-box, kind: local, cuda: true, tags: [mixed]}
  - {name: emu-1, kind: cgroup, memory: 2GiB, tags: [mixed]}
"""))
    fine = load_sweep(_sweep(write_yaml, devices=["gpu-box"], variants=["fp32", "fp16"]))
    assert resolve_targets(fine, inventory, "s", "i") == {"gpu-box": ["gpu-box"]}
    mixed = load_sweep(_sweep(write_yaml, devices=["mixed"], variants=["fp32", "fp16"]))
    with pytest.raises(ConfigError) as caught:
        resolve_targets(mixed, inventory, "sweep.yaml", "inventory.yaml")
    assert caught.value.field == "variants[1]"
    assert "emu-1" in str(caught.value) and "cuda: true" in str(caught.value)


def test_a_hub_id_must_already_be_in_the_local_cache(write_yaml, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError) as caught:
        load_sweep(_sweep(write_yaml, models=[{"name": "m", "hub": "someone/bert"}]))
    assert "not in the local Hugging Face cache" in str(caught.value)


def test_the_readmes_sweep_key_table_is_the_sweep_files_keys_and_defaults():
    """The README's reference table (key, required, default) against the Sweep model itself:
    every key listed once, required where the model requires it, each default as written."""
    import re
    from pathlib import Path

    import yaml

    from farm.sweep import Measure, Sweep

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme.split("| key | required | default | meaning |\n|---|---|---|---|\n")[1]
    rows = [line.split(" | ") for line in table.split("\n\n")[0].splitlines()]
    listed = {row[0].strip("| `"): (row[1], row[2]) for row in rows}
    fields = {f"measure.{k}": f for k, f in Measure.model_fields.items()}
    fields |= {k: f for k, f in Sweep.model_fields.items() if k != "measure"}
    assert sorted(listed) == sorted(fields)
    for key, (required, default) in listed.items():
        field = fields[key]
        assert (required == "yes") == field.is_required(), key
        if field.is_required():
            continue
        written = re.fullmatch(r"`(.*)`", default)
        expected = field.get_default()
        expected = list(expected) if isinstance(expected, tuple) else expected
        if isinstance(expected, list) and expected and not isinstance(expected[0], (int, str)):
            expected = [str(v) for v in expected]  # variants: parsed Variant objects
        # A default in words (the whole inventory, every example, none) is "not set".
        assert (yaml.safe_load(written.group(1)) if written else None) == expected, key


@pytest.mark.parametrize("example", ["glue-baselines.yaml", "first-sweep.yaml"])
def test_the_readme_shows_the_example_sweeps_as_shipped(example):
    """What the README shows of an example is the file (its header comment aside), and the first
    sweep loads as it is: a newcomer copying either gets the same sweep (glue-baselines.yaml runs
    on the written sample: tests/test_glue_sample.py)."""
    from pathlib import Path

    root = Path(__file__).parent.parent
    text = (root / "examples" / example).read_text()
    body = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#")
                   or text.index(line) > text.index("name:"))
    assert body in (root / "README.md").read_text()
    if example == "first-sweep.yaml":  # the GLUE one needs examples/glue_sample.py's files first
        assert load_sweep(root / "examples" / example).name
