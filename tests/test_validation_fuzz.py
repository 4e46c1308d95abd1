"""Generated sweep and inventory files thrown at the validators: each must be accepted or refused
with farm's one-line ConfigError, never crash with anything else."""
from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm.errors import ConfigError
from farm.inventory import load_inventory
from farm.sweep import load_sweep

SWEEP_KEYS = ["name", "devices", "models", "variants", "tasks", "data_dir", "max_samples",
              "batch_sizes", "seq_lens", "measure", "timeout_s", "retries",
              "require_locked_clocks", "path", "paths", "hub", "warmup", "bogus"]
DEVICE_KEYS = ["name", "kind", "memory", "cpus", "tags", "host", "port", "user", "key",
               "python", "cuda", "node", "workdir", "password", "known_hosts", "bogus"]
WORDS = ["bert-tiny", "bert-base", "fp32", "int8", "fp16", "synthetic", "sst2", "mnli-m",
         "cgroup", "local", "jetson", "2GiB", "2XB", "512MiB", "-1", "0", "nano", "", "~/x"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(WORDS),
                    st.text(max_size=12))


def _values(keys):
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(keys), st.integers(0, 3)), inner,
                        max_size=5)), max_leaves=12)


sweeps = st.dictionaries(st.sampled_from(SWEEP_KEYS), _values(SWEEP_KEYS), max_size=8)
devices = st.dictionaries(st.sampled_from(DEVICE_KEYS), _values(DEVICE_KEYS), max_size=8)
inventories = st.one_of(st.fixed_dictionaries({"devices": st.lists(devices, max_size=3)}),
                        st.dictionaries(st.sampled_from(["devices", "bogus"]),
                                        _values(DEVICE_KEYS), max_size=2))
texts = st.text(alphabet=st.sampled_from(list("ab:-[]{}\n #'\"\t|>&*!%@`")), max_size=40)

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _check(load, text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "file.yaml"
        path.write_text(text)
        try:
            load(path)
        except ConfigError as error:
            message = str(error)
            assert message.startswith(str(path)) and "\n" not in error.message


@FUZZ
@given(sweeps)
def test_generated_sweeps_are_accepted_or_cleanly_refused(data):
    _check(load_sweep, yaml.safe_dump(data))


@FUZZ
@given(inventories)
def test_generated_inventories_are_accepted_or_cleanly_refused(data):
    _check(load_inventory, yaml.safe_dump(data))


@FUZZ
@given(texts)
def test_arbitrary_text_is_accepted_or_cleanly_refused(text):
    _check(load_sweep, text)
    _check(load_inventory, text)
