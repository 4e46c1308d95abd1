"""Iterative layer instantiation: the per-layer store (agents/layers.py, farm/layerstore.py) and
the streamed model (agents/stream.py), on every BERT-like family, fp32 and int8, in this torch
and on the Jetson's Python 3.6 / torch 1.10 / transformers 4.18."""
from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from agents import layers, models, stream
from agents.methods import Variant, precision
from farm import layerstore

REPO = Path(__file__).resolve().parent.parent

# Small shapes of each family; 3 layers so that a pass has a first, middle and last layer.
FAMILIES = {
    "bert": dict(num_hidden_layers=3, hidden_size=32, num_attention_heads=2,
                 intermediate_size=64, vocab_size=120),
    "roberta": dict(num_hidden_layers=3, hidden_size=32, num_attention_heads=2,
                    intermediate_size=64, vocab_size=120, max_position_embeddings=66,
                    type_vocab_size=1, pad_token_id=1),
    "distilbert": dict(n_layers=3, dim=32, n_heads=2, hidden_dim=64, vocab_size=120),
    "albert": dict(num_hidden_layers=3, num_hidden_groups=1, hidden_size=32,
                   num_attention_heads=2, intermediate_size=64, embedding_size=16,
                   vocab_size=120),
    "electra": dict(num_hidden_layers=3, hidden_size=32, num_attention_heads=2,
                    intermediate_size=64, embedding_size=16, vocab_size=120),
    "mobilebert": dict(num_hidden_layers=3, hidden_size=32, num_attention_heads=2,
                       intermediate_size=32, embedding_size=16, intra_bottleneck_size=16,
                       true_hidden_size=16, vocab_size=120),
}


def _checkpoint(root: Path, family: str, labels: int = 3) -> Path:
    """A local checkpoint of `family` (seeded random weights, saved as transformers saves)."""
    folder = root / family
    if not folder.exists():
        torch.manual_seed(7)
        config = AutoConfig.for_model(family, num_labels=labels, **FAMILIES[family])
        AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    return folder


def _inputs(vocab: int = 120):
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(5, vocab, (2, 12), generator=generator)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0  # padding: the streamed layers must see the same mask
    return {"input_ids": ids, "attention_mask": mask}


def _eager(spec: dict, kind: str):
    return precision.convert(models.build(spec), kind)


V = Variant.parse  # a variant from its sweep-file form


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs)[0]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {family: _checkpoint(root, family) for family in FAMILIES}


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "stores"


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("variant", ["stream", "stream+prefetch", "stream+int8",
                                     "stream+prefetch+int8"])
def test_streamed_logits_equal_the_eager_models(family, variant, checkpoints, cache):
    spec = {"name": family, "path": str(checkpoints[family])}
    store = layerstore.prepare(spec, V(variant), cache)
    model = stream.open_model(store.folder, V(variant).prefetched)
    inputs = _inputs()
    expected = _logits(_eager(spec, V(variant).precision), inputs)
    first, second = _logits(model, inputs), _logits(model, inputs)
    assert torch.allclose(first, expected, atol=1e-5, rtol=0), (first, expected)
    assert torch.equal(first, second)  # the second pass read every layer again
    manifest = model.farm_stream.manifest
    stats = model.farm_stream.stats
    distinct = len(set(manifest["order"]))
    assert stats.passes == 2 and stats.loads == 2 * distinct
    assert stats.bytes == 2 * sum(u["bytes"] for u in manifest["units"])
    assert all(slot.unit is None and slot.mapping is None for slot in model.farm_stream.slots
               if V(variant).precision == "fp32")  # nothing stays mapped between passes
    model.farm_stream.close()


def test_albert_reads_its_shared_layer_once_per_pass(checkpoints, cache):
    store = layerstore.prepare({"name": "albert", "path": str(checkpoints["albert"])}, V("fp32"),
                               cache)
    manifest = layers.read_manifest(store.folder)
    assert manifest["order"] == [0, 0, 0] and len(manifest["units"]) == 1
    model = stream.open_model(store.folder, prefetch=True)
    _logits(model, _inputs())
    assert model.farm_stream.stats.loads == 1


def test_only_one_layer_is_in_memory_at_a_time_and_two_with_prefetch(checkpoints, cache):
    spec = {"name": "bert", "path": str(checkpoints["bert"])}
    store = layerstore.prepare(spec, V("fp32"), cache)
    for prefetch, most in ((False, 1), (True, 2)):
        model = stream.open_model(store.folder, prefetch)
        streamer, claimed, loading = model.farm_stream, [], []
        claim, load = streamer._claim, streamer._load

        def held() -> int:
            return sum(s.unit is not None for s in streamer.slots)

        # Layers held when one is taken, on the computing thread: with prefetch the next is
        # taken while the current one computes. When the prefetching thread starts its read,
        # the current layer may be done and freed already (a busy machine), so that count is
        # only ever at most as many.
        def counting_claim(unit):
            slot = claim(unit)
            claimed.append(held())
            return slot

        def counting_load(slot):
            loading.append(held())
            return load(slot)
        streamer._claim, streamer._load = counting_claim, counting_load
        _logits(model, _inputs())
        assert claimed and max(claimed) == most
        assert loading and max(loading) <= most
        # every encoder layer's weight is a placeholder outside a pass
        big = [n for n, p in model.named_parameters() if "layer" in n and p.numel() > 0]
        assert big == []


def test_a_catalog_store_is_made_once_and_its_weights_are_the_eager_catalog_models(cache):
    spec = {"name": "bert-tiny"}
    made = layerstore.prepare(spec, V("fp32"), cache)
    again = layerstore.prepare(spec, V("fp32"), cache)
    assert made.prepare_s is not None and again.prepare_s is None
    assert made.folder == again.folder and made.digest == again.digest
    assert layerstore.prepare(spec, V("int8"), cache).digest != made.digest
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == sorted(
        [made.digest, layerstore.digest(spec, V("int8"))])
    model = stream.open_model(made.folder)
    inputs = models.synthetic_inputs(model, 2, 16)
    assert torch.allclose(_logits(model, inputs), _logits(_eager(spec, "fp32"), inputs),
                          atol=1e-5, rtol=0)
    assert model.farm_stream.manifest["params"] == models.parameter_count(models.build(spec))


def test_two_devices_asking_at_once_share_one_store(cache):
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        layerstore.prepare({"name": "bert-mini"}, V("fp32"), cache))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.prepare_s is None for r in results) == [False, True]
    assert not [p for p in cache.iterdir() if ".partial" in p.name]


def test_a_checkpoint_store_follows_the_checkpoints_bytes(tmp_path, cache):
    folder = _checkpoint(tmp_path, "bert")
    spec = {"name": "mine", "path": str(folder)}
    before = layerstore.digest(spec, V("fp32"))
    config = json.loads((folder / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (folder / "config.json").write_text(json.dumps(config))
    assert layerstore.digest(spec, V("fp32")) != before


def test_an_incomplete_or_foreign_store_is_refused(checkpoints, cache):
    store = layerstore.prepare({"name": "bert", "path": str(checkpoints["bert"])}, V("fp32"), cache)
    folder = Path(store.folder)
    (folder / layers.COMPLETE).rename(folder / "aside")
    with pytest.raises(layers.StoreError, match="no complete layer store"):
        stream.open_model(str(folder))
    (folder / "aside").rename(folder / layers.COMPLETE)
    manifest = json.loads((folder / layers.MANIFEST).read_text())
    (folder / layers.MANIFEST).write_text(json.dumps(dict(manifest, format=99)))
    with pytest.raises(layers.StoreError, match="format 99"):
        stream.open_model(str(folder))


def test_named_variants_of_earlier_releases():
    streamed = [v for v in ("fp32", "int8", "fp16", "stream", "stream+prefetch", "stream+int8",
                            "stream+prefetch+int8") if V(v).streamed]
    assert streamed == ["stream", "stream+prefetch", "stream+int8", "stream+prefetch+int8"]
    assert [V(v).prefetched for v in ("stream", "stream+prefetch", "fp32")] == [False, True, False]
    assert [V(v).precision for v in ("stream+int8", "stream", "int8", "fp16")] == [
        "int8", "fp32", "int8", "fp16"]


_JETSON_READER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
from agents import stream
inputs = json.loads(sys.argv[3])
out = {}
for prefetch in (False, True):
    model = stream.open_model(sys.argv[2], prefetch)
    with torch.no_grad():
        out[str(prefetch)] = model(input_ids=torch.tensor(inputs["input_ids"]),
                                   attention_mask=torch.tensor(inputs["attention_mask"]))[0].tolist()
print(json.dumps(out))
"""


def _streams_on_the_jetson_stack(jetson_python: str, folder: str, inputs: dict, expected):
    """Stream the store at `folder` on Python 3.6 / torch 1.10, with and without prefetch: its
    logits must be `expected`."""
    done = subprocess.run(
        [jetson_python, "-c", _JETSON_READER, str(REPO), folder,
         json.dumps({k: v.tolist() for k, v in inputs.items()})],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert done.returncode == 0, done.stderr[-2000:]
    for logits in json.loads(done.stdout.strip().splitlines()[-1]).values():
        assert torch.allclose(torch.tensor(logits), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["bert", "distilbert", "albert", "mobilebert"])
@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_the_jetson_stack_reads_a_store_made_by_this_torch(family, kind, checkpoints, cache,
                                                           jetson_python):
    """A store written here (torch 2, transformers 5) is read on Python 3.6 / torch 1.10 /
    transformers 4.18, where it gives this torch's eager logits."""
    spec = {"name": family, "path": str(checkpoints[family])}
    store = layerstore.prepare(spec, V(kind), cache)
    inputs = _inputs()
    expected = _logits(_eager(spec, kind), inputs)
    _streams_on_the_jetson_stack(jetson_python, store.folder, inputs, expected)


def _rows(db_url: str, sql: str, *args) -> list[dict]:
    import sqlite3

    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql, args)]


def test_bert_base_streams_where_eager_runs_out_of_memory(
        cgroups, write_yaml, db_url, device_names, tmp_path, monkeypatch):
    """Through farm submit (real Ray, real cgroups): in 640 MiB eager bert-base is `oom` and its
    streamed variants finish; in 2 GiB all run; streamed logits are eager's; stream's model
    memory is at most 35% of eager's; a pass reads every layer's bytes from storage."""
    from farm.api import submit
    from farm.comparisons import compare

    monkeypatch.setenv("FARM_CACHE", str(tmp_path / "cache"))
    big, small = device_names(2)
    inventory = write_yaml("inventory.yaml", {"devices": [
        {"name": big, "kind": "cgroup", "memory": "2GiB", "cpus": 1},
        {"name": small, "kind": "cgroup", "memory": "640MiB", "cpus": 1}]})
    sweep = write_yaml("sweep.yaml", {
        "name": "stream-e2e", "devices": [big, small], "models": ["bert-base"],
        "variants": ["fp32", "stream", "stream+prefetch", "int8", "stream+int8"],
        "tasks": ["synthetic"], "batch_sizes": [1], "seq_lens": [64], "retries": 0,
        "measure": {"warmup": 1, "min_iters": 3, "min_seconds": 0.05}})
    report = submit(sweep, inventory, db=db_url)
    status = {(r["variant"], r["device"]): r["status"] for r in report.results}
    assert status[("fp32", small)] == "oom"
    assert all(status[(v, small)] == "done" for v in ("stream", "stream+prefetch", "stream+int8"))
    assert all(status[(v, big)] == "done" for v in ("fp32", "stream", "stream+prefetch", "int8",
                                                    "stream+int8"))
    rows = {(c.result["variant"], c.result["device"]): c for c in compare(report.results)}
    for key, row in rows.items():
        if V(key[0]).streamed:
            assert row.reference["variant"] == V(key[0]).precision
            assert row.stream_gap is not None and row.stream_gap < 1e-4, key
    eager, streamed_ = rows[("fp32", big)].result, rows[("stream", big)].result
    assert eager["model_memory_mb"] > 400  # bert-base's 418 MB of fp32 weights
    assert streamed_["model_memory_mb"] <= 0.35 * eager["model_memory_mb"]
    store = _rows(db_url, "select layer_store from model_loads where variant = 'stream'")[0]
    manifest = layers.read_manifest(str(tmp_path / "cache/layer-stores" / store["layer_store"]))
    for variant in ("stream", "stream+prefetch"):
        for device in (big, small):
            r = rows[(variant, device)].result
            assert r["bytes_read"] == sum(u["bytes"] for u in manifest["units"])
            assert r["storage_read_bytes"] > 0 and r["read_ms"] > 0 and r["compute_ms"] > 0
            if variant == "stream":  # it waits for every read; with prefetch, reads overlap
                assert r["read_wait_ms"] >= r["read_ms"]
            else:
                assert r["read_wait_ms"] < r["read_ms"]
    assert eager["bytes_read"] is None and eager["read_ms"] is None


METHODS = {"name": "methods", "prune_heads": 0.5, "low_rank": {"rank": 0.5}}


def test_a_board_on_the_jetson_stack_streams_an_uploaded_store(
        checkpoints, boards, write_yaml, db_url, tmp_path, jetson_python, monkeypatch):
    """Over SSH, on Python 3.6 / torch 1.10 / transformers 4.18: the stores are made here, copied
    to the board by content hash, and the board's streamed logits are its eager ones."""
    import sys

    from farm.api import submit

    monkeypatch.setenv("FARM_CACHE", str(tmp_path / "cache"))
    made = boards(2)  # two: the six variants' agents (Python 3.6 each) two at a time
    inventory = write_yaml("inventory.yaml", {"devices": [
        board.inventory_entry(tmp_path / f"known_hosts-{board.name}", jetson_python)
        for board in made]})
    farm = str(Path(sys.executable).parent / "farm")
    trusting = [subprocess.Popen([farm, "devices", "trust", board.name, "--yes", "-i",
                                  str(inventory)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for board in made]
    for trusted in trusting:
        _, stderr = trusted.communicate(timeout=120)
        assert trusted.returncode == 0, stderr
    sweep = write_yaml("sweep.yaml", {
        "name": "stream-board", "models": [{"name": "tiny-distilbert",
                                            "path": str(checkpoints["distilbert"])}],
        "variants": ["fp32", "stream+prefetch", "int8", "stream+int8", METHODS,
                     dict(METHODS, name="methods-stream", execution="stream")],
        "tasks": ["synthetic"], "batch_sizes": [2], "seq_lens": [16], "retries": 0,
        "measure": {"warmup": 1, "min_iters": 3, "min_seconds": 0.05}})
    report = submit(sweep, inventory, db=db_url)
    assert report.counts == {"done": 6}
    from farm.comparisons import compare
    for row in compare(report.results):
        if row.variant.streamed:
            assert row.stream_gap is not None and row.stream_gap < 1e-5
            assert row.result["bytes_read"] > 0 and row.result["read_ms"] > 0
    envs = _rows(db_url, "select env_json from results")
    assert {json.loads(e["env_json"])["python"] for e in envs} == {"3.6.15"}
    stores = _rows(db_url, "select device, layer_store from model_loads "
                           "where layer_store is not null")
    assert len({r["layer_store"] for r in stores}) == 3
    for board in made:  # each board holds the stores of the jobs it ran, and no other
        layers_dir = board.workdir / "layers"
        copies = sorted(p.name for p in layers_dir.iterdir()) if layers_dir.exists() else []
        assert copies == sorted({r["layer_store"] for r in stores if r["device"] == board.name})
        assert all((layers_dir / d / layers.COMPLETE).exists() for d in copies)
    # the methods ran on the board (eager) and in the store made here (streamed) alike
    board_rows = {r["variant"]: r for r in report.results}
    for variant in ("methods", "methods-stream"):
        assert board_rows[variant]["heads_pruned"] == 3  # 1 of 2 heads in each of 3 layers
        # then, at half rank: Q, K, V (16 x 32 once pruned), the output (32 x 16) and the
        # FFN's two (64 x 32, 32 x 64) hold fewer weights as pairs of rank 8 and 16
        assert board_rows[variant]["factorized_layers"] == 3 * 6
        assert board_rows[variant]["params"] < board_rows["fp32"]["params"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("entry", [
    {"name": "heads-stream", "prune_heads": 0.5, "execution": "stream"},
    {"name": "rank-prefetch", "low_rank": {"rank": 0.5}, "execution": "stream+prefetch"},
    {"name": "both-int8", "prune_heads": 0.5, "low_rank": {"rank": 0.25}, "precision": "int8",
     "execution": "stream"}], ids=lambda e: e["name"])
def test_a_store_holds_the_methods_layers_and_streams_their_logits(family, entry, checkpoints,
                                                                    cache):
    """The store of a variant with methods holds the transformed layers (pruned heads, low-rank
    pairs, int8 pairs), and streaming them gives the eager transformed model's logits."""
    from agents.methods import apply_methods

    variant = V(entry)
    spec = {"name": family, "path": str(checkpoints[family])}
    store = layerstore.prepare(spec, variant, cache)
    model = stream.open_model(store.folder, variant.prefetched)
    eager = models.build(spec)
    figures = apply_methods(eager, variant)
    params = models.parameter_count(eager)
    eager = precision.convert(eager, variant.precision)
    inputs = _inputs()
    assert torch.allclose(_logits(model, inputs), _logits(eager, inputs), atol=1e-5, rtol=0)
    manifest = model.farm_stream.manifest
    assert manifest["params"] == params and manifest["method_fields"] == figures
    assert manifest["methods"] == variant.spec()["methods"]
    assert store.digest != layerstore.digest(spec, V(variant.precision == "int8" and "stream+int8"
                                                     or "stream"))
    model.farm_stream.close()


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_the_jetson_stack_streams_a_store_of_pruned_and_factorized_int8_layers(
        family, checkpoints, cache, jetson_python):
    """Pruned heads and low-rank pairs, quantized, written here and streamed on Python 3.6 /
    torch 1.10 / transformers 4.18: the eager transformed model's logits here."""
    from agents.methods import apply_methods

    variant = V({"name": "both", "prune_heads": 0.5, "low_rank": {"rank": 0.25},
                 "precision": "int8", "execution": "stream"})
    spec = {"name": family, "path": str(checkpoints[family])}
    store = layerstore.prepare(spec, variant, cache)
    eager = models.build(spec)
    apply_methods(eager, variant)
    inputs = _inputs()
    expected = _logits(precision.convert(eager, "int8"), inputs)
    _streams_on_the_jetson_stack(jetson_python, store.folder, inputs, expected)
