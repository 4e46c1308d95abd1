"""Early exit (agents/exits.py, agents/methods/early_exit.py, agents/exit_timing.py): a tiny
BERT with an exit after every layer, trained here on a task it can learn, saved in DeeBERT's,
PABEE's and farm's layouts; where each example exits is checked against a reference computed in
tests/exit_checkpoints.py from the saved tensors alone, and FLOPs against the count from shapes.
"""
from __future__ import annotations

import json

import pytest
import torch

from agents import flops, models
from agents.exits import Runner
from agents.methods import MethodError, Variant, apply_methods
from conftest import QUICK
from exit_checkpoints import (FFN, HIDDEN, KIND, LABELS, LAYERS, Trained, layer_outputs,
                              reference_exit)
from farm.sweep import Sweep, expand
from glue_checkpoints import examples

V = Variant.parse
NEVER, ALWAYS = 0.0, 10.0  # entropy below 0 nats never happens; below 10 always (ln 2 = 0.69)
THRESHOLDS = [NEVER, 0.3, 0.5, 0.6, ALWAYS]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("exits")
    made = Trained(root / "tokenizer")
    return {layout: made.save(root / layout, layout)
            for layout in ("deebert", "pabee", "farm", "plain")}


@pytest.fixture(scope="module")
def dev():
    return [texts for texts, _ in examples(KIND, 40, seed=7)]


def _exit_model(folder, params):
    model = models.build({"name": "m", "path": str(folder)})
    figures = apply_methods(model, V({"name": "ee", "early_exit": params}))
    return model, figures


def _alone(folder, model, texts):
    """Each example on its own, at its own length (no padding)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return [dict(tokenizer(*[[t] for t in example], return_tensors="pt")) for example in texts]


def _layer_flops(seq: int) -> int:
    """A BERT layer on one example of seq tokens: Q, K, V and the attention output (4 H^2), the
    FFN (2 H F), 2 FLOPs a multiply-add; the two attention matmuls 4 s^2 H."""
    return 2 * seq * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN) + 4 * seq * seq * HIDDEN


HEAD_FLOPS = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * LABELS  # a pooler and a classifier on [CLS]


# -- the variant grammar ---------------------------------------------------------------------
def test_lists_of_thresholds_expand_into_one_variant_per_value_with_its_own_key():
    sweep = Sweep.model_validate({"name": "ee", "models": ["bert-tiny"], "variants": [
        "fp32", {"name": "dee", "early_exit": {"policy": "entropy", "thresholds": [0.05, 0.1]}},
        {"name": "pab", "early_exit": {"policy": "patience", "patience": [1, 2, 3]}},
        {"name": "at", "early_exit": {"exit_at": [1, 2]}}]}, context={"base_dir": "/"})
    names = [v.name for v in sweep.variants]
    assert names == ["fp32", "dee-0.05", "dee-0.1", "pab-1", "pab-2", "pab-3", "at-1", "at-2"]
    assert sweep.variants[2].methods == (
        ("early_exit", {"policy": "entropy", "threshold": 0.1, "padding": "none"}),)
    assert sweep.variants[4].methods[0][1] == {"policy": "patience", "patience": 2,
                                               "padding": "none"}
    keys = [job.key for job in expand(sweep, ["box"])]
    assert len(set(keys)) == len(keys) == 8
    again = Sweep.model_validate(sweep.model_dump(), context={"base_dir": "/"})  # farm resume
    assert [j.key for j in expand(again, ["box"])] == keys


def test_a_list_without_a_name_or_reusing_a_name_is_refused(write_yaml):
    from farm.errors import ConfigError
    from farm.sweep import load_sweep

    for variants, words in (
            ([{"early_exit": {"thresholds": [0.1, 0.2]}}], r"variants\[0\]\.name: .*needs a name"),
            ([{"name": "d-0.1", "prune_heads": 0.5},
              {"name": "d", "early_exit": {"thresholds": [0.1, 0.2]}}],
             r"variants\[1\]\.name: variant name 'd-0.1' is used twice")):
        path = write_yaml("sweep.yaml", {"name": "s", "models": ["bert-tiny"],
                                         "variants": variants})
        with pytest.raises(ConfigError, match=words):
            load_sweep(path)


@pytest.mark.parametrize("value, words", [
    ({"policy": "entropy"}, "threshold is None"),
    ({"policy": "random", "threshold": 0.1}, "policy is 'random'"),
    ({"policy": "patience", "patience": 0}, "whole number"),
    ({"policy": "entropy", "threshold": 0.1, "patience": 2}, "not patience"),
    ({"exit_at": 2, "policy": "entropy"}, "takes no policy"),
    ({"exit_at": 2, "padding": "left"}, "padding"),
    ({"policy": "entropy", "thresholds": 0.1}, "unknown parameter"),
    (0.1, "a mapping"),
])
def test_a_bad_early_exit_says_the_fix(value, words):
    with pytest.raises(MethodError, match=words):
        V({"name": "x", "early_exit": value})


# -- layouts and policies against the reference -------------------------------------------------
@pytest.mark.parametrize("layout, policy, values", [
    ("deebert", "entropy", THRESHOLDS),
    ("farm", "confidence", [1.0, 0.8, 0.6, 0.0]),
    ("pabee", "patience", [1, 2, 3, 4]),
    ("pabee", "entropy", [NEVER, 0.5, 0.6, ALWAYS]),
])
def test_exit_layers_and_predictions_equal_the_reference(trained, dev, layout, policy, values):
    reference = layer_outputs(trained[layout], layout, dev)
    for value in values:
        model, figures = _exit_model(trained[layout], {"policy": policy, (
            "patience" if policy == "patience" else "threshold"): value})
        assert figures == {"exit_heads": layout, "exit_layers": LAYERS}
        runner = Runner(model)
        with torch.no_grad():
            outs = [runner.run(inputs) for inputs in _alone(trained[layout], model, dev)]
        layers = [out[1][0] for out in outs]
        expected = [reference_exit(per_layer, policy, value) for per_layer in reference]
        assert layers == expected, (policy, value)
        assert [int(out[0][0].argmax()) for out in outs] == [
            max(range(LABELS), key=per_layer[k - 1].__getitem__)
            for per_layer, k in zip(reference, expected)]
        assert [out[2] for out in outs] == expected  # the pass ran exactly that many layers


def test_thresholds_from_never_to_always_exit(trained, dev):
    """Never: every example at layer L, predicting what the model itself predicts; always: at
    layer 1; between, the mean exit layer falls as the threshold rises."""
    means = []
    for threshold in THRESHOLDS:
        model, _ = _exit_model(trained["deebert"], {"policy": "entropy", "threshold": threshold})
        runner = Runner(model)
        with torch.no_grad():
            batches = _alone(trained["deebert"], model, dev)
            outs = [runner.run(inputs) for inputs in batches]
            full = [int(model(**inputs).logits.argmax()) for inputs in batches]
        layers = [out[1][0] for out in outs]
        if threshold == NEVER:
            assert layers == [LAYERS] * len(dev)
            assert [int(out[0][0].argmax()) for out in outs] == full
        if threshold == ALWAYS:
            assert layers == [1] * len(dev)
        means.append(sum(layers) / len(layers))
    assert means == sorted(means, reverse=True) and means[0] > means[-1]
    assert len(set(means)) >= 3, means  # the curve has points between its ends


def test_deeroberta_highways_load_under_their_own_prefix(tmp_path):
    """DeeBERT's RoBERTa checkpoints keep their highways at roberta.encoder.highway.{i}."""
    from safetensors.torch import load_file, save_file

    from test_stream import _checkpoint

    folder = _checkpoint(tmp_path, "roberta")
    state = load_file(str(folder / "model.safetensors"))
    torch.manual_seed(5)
    for i in range(3):
        state.update({f"roberta.encoder.highway.{i}.pooler.dense.weight": torch.randn(32, 32),
                      f"roberta.encoder.highway.{i}.pooler.dense.bias": torch.randn(32),
                      f"roberta.encoder.highway.{i}.classifier.weight": torch.randn(3, 32),
                      f"roberta.encoder.highway.{i}.classifier.bias": torch.randn(3)})
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    model, figures = _exit_model(folder, {"policy": "entropy", "threshold": 0.1})
    assert figures["exit_heads"] == "deebert" and len(model.farm_exit_heads) == 2
    assert torch.equal(model.farm_exit_heads[1].classifier.weight,
                       state["roberta.encoder.highway.1.classifier.weight"])

def test_a_checkpoint_without_exits_refuses_a_policy_and_the_fix_says_farm_exits_fit(trained):
    with pytest.raises(MethodError, match="no exit heads") as caught:
        _exit_model(trained["plain"], {"policy": "entropy", "threshold": 0.1})
    assert "farm exits fit" in caught.value.fix



def test_a_regression_model_takes_exit_at_only(tmp_path):
    from transformers import BertForSequenceClassification

    from exit_checkpoints import config

    made = config(100)
    made.num_labels = 1
    BertForSequenceClassification(made).save_pretrained(str(tmp_path / "stsb"))
    with pytest.raises(MethodError, match="regression") as caught:
        _exit_model(tmp_path / "stsb", {"policy": "patience", "patience": 2})
    assert "exit_at" in caught.value.fix
    model, figures = _exit_model(tmp_path / "stsb", {"exit_at": 2})
    with torch.no_grad():
        _, layers, ran = Runner(model).run(models.synthetic_inputs(model, 2, 8))
    assert figures["exit_heads"] == "random" and layers == [2, 2] and ran == 2

# -- cost --------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 4])
def test_exit_at_k_runs_k_layers_of_a_catalog_model(k):
    """bert-mini (4 layers, hidden 256, FFN 1024) has no exits: exit_at k runs k layers and one
    seeded random head, and at k = L it is the model itself."""
    model = models.build({"name": "bert-mini"})
    baseline = models.build({"name": "bert-mini"})
    apply_methods(model, V({"name": "at", "early_exit": {"exit_at": k}}))
    calls = []
    hooks = [layer.register_forward_hook(lambda *a: calls.append(1))
             for layer in model.bert.encoder.layer]
    inputs = models.synthetic_inputs(model, 1, 16)
    runner = Runner(model)
    with torch.no_grad():
        logits, layers, ran = runner.run(inputs)
    for hook in hooks:
        hook.remove()
    assert len(calls) == ran == k and layers == [k]
    hidden, ffn, seq = 256, 1024, 16
    layer = 2 * seq * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * seq * seq * hidden
    head = 2 * hidden * hidden + 2 * hidden * 2
    assert flops.analytic_call(model, lambda: runner.run(inputs)) == k * layer + head
    if k == 4:
        with torch.no_grad():
            assert torch.equal(logits, baseline(**inputs).logits)


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "albert", "electra",
                                    "mobilebert"])
def test_exit_at_works_on_every_family(tmp_path, family):
    """A plain checkpoint of each family (test_stream's shapes, 3 layers; ALBERT's one shared
    layer is called 3 times): exit_at k runs k layer calls, and at k = L it is the model."""
    from test_stream import _checkpoint, _inputs

    folder = _checkpoint(tmp_path, family)
    plain = models.build({"name": family, "path": str(folder)})
    for k in (1, 2, 3):
        model, figures = _exit_model(folder, {"exit_at": k})
        with torch.no_grad():
            logits, layers, ran = Runner(model).run(_inputs())
        assert (layers, ran, figures["exit_heads"]) == ([k, k], k, "random")
    with torch.no_grad():
        assert torch.allclose(logits, plain(**_inputs())[0], atol=1e-6)

@pytest.mark.parametrize("layout, policy, value", [
    ("deebert", "entropy", 0.5), ("deebert", "entropy", NEVER), ("pabee", "patience", 2)])
def test_flops_per_example_are_the_layers_and_heads_that_ran(trained, dev, layout, policy,
                                                             value):
    """At its own length s, an example that exits at layer k spent k layers and every head
    evaluated: k of them (at layer L through DeeBERT's own head, so L too; PABEE's patience
    reads a head after every layer)."""
    key = "patience" if policy == "patience" else "threshold"
    model, _ = _exit_model(trained[layout], {"policy": policy, key: value})
    runner = Runner(model)
    for inputs in _alone(trained[layout], model, dev[:10]):
        with torch.no_grad():
            _, (k,), _ = runner.run(inputs)
        seq = inputs["input_ids"].shape[1]
        assert flops.analytic_call(model, lambda: runner.run(inputs)) == \
            k * _layer_flops(seq) + k * HEAD_FLOPS


# -- the agent's job ---------------------------------------------------------------------------
class _Channel:
    def __init__(self):
        self.events = []

    def emit(self, event, **fields):
        self.events.append((event, fields))


def _agent_job(folder, params, texts, batch=1, precision="fp32"):
    from agents.serve import Agent

    agent = Agent(_Channel())
    variant = V({"name": "ee", "precision": precision, "early_exit": params})
    agent.load({"name": "m", "path": str(folder)}, variant, 1, [32], False)
    return agent.run({"key": "k", "task": "sst2", "batch_size": batch, "seq_len": 32,
                      "measure": QUICK, "texts": texts, "evaluate": True})


def test_the_agent_times_every_example_beside_full_depth_and_reports_the_curve(trained, dev):
    result = _agent_job(trained["farm"], {"policy": "entropy", "threshold": 0.5}, dev)
    reference = layer_outputs(trained["farm"], "farm", dev)
    layers = [reference_exit(per_layer, "entropy", 0.5) for per_layer in reference]
    per_example = result["exits"]
    assert per_example["exit_layer"] == layers
    assert result["predictions"] == [max(range(LABELS), key=p[k - 1].__getitem__)
                                     for p, k in zip(reference, layers)]
    fields = result["method_fields"]
    assert fields["exit_layer_mean"] == sum(layers) / len(layers)
    assert json.loads(fields["exit_histogram"]) == [layers.count(i) for i in range(1, LAYERS + 1)]
    assert fields["exit_expected_saving"] == pytest.approx(1 - sum(layers) / (len(dev) * LAYERS))
    assert fields["exit_speedup"] == pytest.approx(fields["exit_full_ms"]
                                                   / fields["exit_example_ms"])
    assert fields["exit_example_p50_ms"] <= fields["exit_example_p90_ms"] \
        <= fields["exit_example_p99_ms"]
    assert len(per_example["latency_ms"]) == len(per_example["full_ms"]) == len(dev)
    assert fields["exit_flops_mean"] == pytest.approx(sum(per_example["flops"]) / len(dev))
    lengths = [inputs["input_ids"].shape[1] for inputs in _alone(trained["farm"], None, dev)]
    assert per_example["flops"] == [k * (_layer_flops(s) + HEAD_FLOPS)
                                    for k, s in zip(layers, lengths)]
    assert result["flops"] == round(fields["exit_flops_mean"])
    assert result["iters"] >= len(dev) and fields["exit_heads"] == "farm"


def test_a_batch_runs_until_its_last_example_exits(trained, dev):
    result = _agent_job(trained["deebert"], {"policy": "entropy", "threshold": 0.5}, dev,
                        batch=4)
    fields = result["method_fields"]
    assert fields["exit_batch_layers_mean"] >= fields["exit_layer_mean"]
    layers = result["exits"]["exit_layer"]
    batches = [max(layers[i:i + 4]) for i in range(0, len(layers), 4)]
    assert fields["exit_batch_layers_mean"] == sum(batches) / len(batches)


def test_int8_exits_run_quantized(trained, dev):
    from agents.layers import is_quantized_linear

    result = _agent_job(trained["deebert"], {"policy": "entropy", "threshold": 0.5}, dev,
                        precision="int8")
    assert set(result["exits"]["exit_layer"]) <= set(range(1, LAYERS + 1))
    model = models.build({"name": "m", "path": str(trained["deebert"])})
    apply_methods(model, V({"name": "ee", "early_exit": {"policy": "entropy",
                                                         "threshold": 0.5}}))
    from agents.methods import precision

    quantized = precision.convert(model, "int8")
    assert all(is_quantized_linear(head.classifier) for head in quantized.farm_exit_heads)


# -- streamed --------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout, execution, precision", [
    ("deebert", "stream", "fp32"), ("pabee", "stream+prefetch", "fp32"),
    ("farm", "stream", "int8")])
def test_a_streamed_pass_that_exits_at_layer_k_reads_k_layers(trained, dev, tmp_path, layout,
                                                              execution, precision):
    """The heads stay with the resident weights; a pass that exits at k reads layers 1..k from
    the store (with prefetch also k+1, already on its way when the pass stopped), exits where
    the eager model of the same precision does, and predicts the same."""
    from agents import exit_timing, stream
    from agents.methods import precision as precisions
    from farm import layerstore

    params = {"policy": "entropy", "threshold": 0.5}
    variant = V({"name": "s", "execution": execution, "precision": precision,
                 "early_exit": params})
    store = layerstore.prepare({"name": "m", "path": str(trained[layout])}, variant,
                               tmp_path / "stores")
    model = stream.open_model(store.folder, variant.prefetched, variant.methods)
    eager = precisions.convert(_exit_model(trained[layout], params)[0], precision)
    units = [unit["bytes"] for unit in model.farm_stream.manifest["units"]]
    runner, eager_runner = Runner(model), Runner(eager)
    seen = set()
    for inputs in _alone(trained[layout], model, dev):
        with torch.no_grad():
            logits, (k,), _ = runner.run(inputs)
            expected, (eager_k,), _ = eager_runner.run(inputs)
        assert k == eager_k and torch.allclose(logits, expected, atol=1e-5)
        counted, read = exit_timing._spent(model, runner, inputs)
        layers_read = k + 1 if variant.prefetched and k < LAYERS else k
        assert read == sum(units[:layers_read])
        if precision == "fp32":
            assert counted == k * (_layer_flops(inputs["input_ids"].shape[1]) + HEAD_FLOPS)
        seen.add(k)
    assert len(seen) > 1, seen  # exits at more than one depth


def test_one_layer_store_serves_every_threshold(trained):
    """The policy and its value change no weight: a sweep over thresholds streams from one
    store; exit_at (random heads allowed) has its own; other methods' stores keep their names."""
    import hashlib

    import transformers

    from farm import layerstore

    spec = {"name": "m", "path": str(trained["deebert"])}

    def digest(params):
        return layerstore.digest(spec, V({"name": "s", "execution": "stream",
                                          "early_exit": params}))

    assert digest({"policy": "entropy", "threshold": 0.1}) == digest(
        {"policy": "confidence", "threshold": 0.9}) == digest({"policy": "patience",
                                                               "patience": 3})
    assert digest({"exit_at": 1}) == digest({"exit_at": 2}) != digest(
        {"policy": "entropy", "threshold": 0.1})
    heads = V({"name": "h", "prune_heads": 0.5, "execution": "stream"})
    catalog = {"name": "bert-tiny"}
    from agents import catalog as entries
    identity = {"catalog": "bert-tiny", "entry": entries.CATALOG["bert-tiny"],
                "labels": entries.NUM_LABELS, "seed": entries.CATALOG_SEED,
                "transformers": transformers.__version__, "torch": torch.__version__,
                "methods": [["prune_heads", {"fraction": 0.5}]], "format": 1,
                "precision": "fp32"}
    assert layerstore.digest(catalog, heads) == hashlib.sha256(
        json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

def test_a_streamed_job_stores_the_layer_bytes_each_example_read(trained, dev, tmp_path):
    from agents.serve import Agent
    from farm import layerstore

    variant = V({"name": "s", "execution": "stream", "early_exit": {"policy": "entropy",
                                                                    "threshold": 0.5}})
    spec = {"name": "m", "path": str(trained["deebert"])}
    store = layerstore.prepare(spec, variant, tmp_path / "stores")
    agent = Agent(_Channel())
    agent.load(dict(spec, store=store.folder), variant, 1, [32], False)
    result = agent.run({"key": "k", "task": "sst2", "batch_size": 1, "seq_len": 32,
                        "measure": QUICK, "texts": dev, "evaluate": True})
    unit = agent.model.farm_stream.manifest["units"][0]["bytes"]
    layers = result["exits"]["exit_layer"]
    assert result["exits"]["bytes_read"] == [k * unit for k in layers]
    assert result["method_fields"]["exit_bytes_mean"] == pytest.approx(
        unit * sum(layers) / len(layers))
    assert result["method_fields"]["exit_heads"] == "deebert"

# -- farm exits fit ------------------------------------------------------------------------------
def test_farm_exits_fit_gives_a_first_layer_exit_above_chance(tmp_path):
    """A fine-tuned checkpoint with no exits (glue_checkpoints' 2-layer BERT on the marker
    task, as SST-2): the command fits the exit after layer 1 on train.tsv, shows each exit's
    dev accuracy, and saves a checkpoint whose exits early_exit loads (farm's layout)."""
    from typer.testing import CliRunner

    from farm.cli import app
    from glue_checkpoints import train_checkpoint
    from glue_files import write_dev_file

    checkpoint = train_checkpoint(tmp_path / "sst2-model", "single")
    data = tmp_path / "glue"
    write_dev_file(data, "sst2", examples("single", 400, seed=3)).rename(
        data / "SST-2" / "train.tsv")
    write_dev_file(data, "sst2", examples("single", 100, seed=4))
    result = CliRunner().invoke(app, ["exits", "fit", str(checkpoint), "--task", "sst2",
                                      "--data-dir", str(data), "--out", str(tmp_path / "out"),
                                      "--epochs", "20"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "out" / "exit_heads.json").read_text())
    assert meta["heads"] == 1 and meta["task"] == "sst2" and meta["train_examples"] == 400
    first, own = meta["dev_accuracy"]
    assert first > 0.75, meta  # chance is 0.5 (the labels are balanced)
    assert "exit after layer" in result.output and f"{first:.3f}" in result.output
    model, figures = _exit_model(tmp_path / "out", {"policy": "entropy", "threshold": 10.0})
    assert figures["exit_heads"] == "farm"
    dev = [texts for texts, _ in examples("single", 100, seed=4)]
    labels = [int(label) for _, label in examples("single", 100, seed=4)]
    runner = Runner(model)
    with torch.no_grad():
        outs = [runner.run(inputs) for inputs in _alone(tmp_path / "out", model, dev)]
    assert {out[1][0] for out in outs} == {1}
    correct = sum(int(out[0][0].argmax()) == y for out, y in zip(outs, labels)) / len(labels)
    assert correct == pytest.approx(first, abs=0.02)  # the agent's exit is the fitted one


def test_farm_exits_fit_refuses_a_regression_task_and_a_missing_train_file(tmp_path):
    from farm.errors import FarmError
    from farm.exits import fit

    with pytest.raises(FarmError, match="regression"):
        fit(tmp_path, "stsb", tmp_path)
    with pytest.raises(FarmError, match="train.tsv"):
        fit(tmp_path, "sst2", tmp_path)


# -- end to end ----------------------------------------------------------------------------------
def test_a_sweep_of_thresholds_end_to_end(trained, cgroups, write_yaml, db_url, device_names,
                                          tmp_path):
    """`farm submit` (real Ray, two cgroup devices) of a DeeBERT-layout checkpoint on SST-2-format
    data, fp32 and one early-exit variant per threshold: the threshold that never exits runs
    every example to layer L and predicts what the full model predicts; the one that always
    exits stops every example at layer 1; the mean exit layer falls across the thresholds; the
    stored score is scikit-learn's accuracy on the stored predictions."""
    import sqlite3

    from sklearn.metrics import accuracy_score

    from farm.api import submit
    from glue_files import write_dev_file

    data = trained["deebert"].parent / "glue"
    write_dev_file(data, "sst2", examples(KIND, 40, seed=7))
    devices = device_names(2)  # two: six agents' loads (one per variant) on 2 cores
    inventory = write_yaml("inventory.yaml", {"devices": [
        {"name": device, "kind": "cgroup", "memory": "2GiB", "cpus": 1} for device in devices]})
    sweep = write_yaml("sweep.yaml", {
        "name": "exits", "models": [{"name": "tiny", "path": str(trained["deebert"])}],
        "tasks": ["sst2"], "data_dir": str(data), "batch_sizes": [1], "seq_lens": [32],
        "measure": QUICK, "retries": 0, "variants": ["fp32", {"name": "dee", "early_exit": {
            "policy": "entropy", "thresholds": THRESHOLDS}}]})
    report = submit(sweep, inventory, db=db_url)
    assert report.counts == {"done": 1 + len(THRESHOLDS)}
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        db.row_factory = sqlite3.Row
        rows = {r["variant"]: dict(r) for r in db.execute("select * from v_results")}
        stored = {}
        for variant, row in rows.items():
            predictions = db.execute(
                "select p.label, p.prediction from predictions p join jobs j on j.id = p.job_id "
                "where j.key = ? order by p.example", (row["job_key"],)).fetchall()
            stored[variant] = ([p[0] for p in predictions], [p[1] for p in predictions])
    names = ["dee-%g" % t for t in THRESHOLDS]
    means = [rows[name]["exit_layer_mean"] for name in names]
    never, always = rows[names[0]], rows[names[-1]]
    assert json.loads(never["exits_json"])["exit_layer"] == [LAYERS] * 40
    assert json.loads(never["exit_histogram"]) == [0, 0, 0, 40]
    assert stored[names[0]][1] == stored["fp32"][1]
    assert json.loads(always["exit_histogram"]) == [40, 0, 0, 0] and means[-1] == 1.0
    assert means == sorted(means, reverse=True) and len(set(means)) >= 3
    for name in names + ["fp32"]:
        labels, predictions = stored[name]
        assert rows[name]["score"] == accuracy_score(labels, predictions) > 0.5
    for name in names:
        row = rows[name]
        assert row["exit_expected_saving"] == pytest.approx(1 - row["exit_layer_mean"] / LAYERS)
        assert row["exit_speedup"] > 0 and row["exit_full_ms"] > 0
        assert row["exit_heads"] == "deebert" and row["exit_layers"] == LAYERS
    # Layers skipped are time saved: always exiting at 1 of 4 layers is faster than full depth.
    assert always["exit_speedup"] > 1.0
    _reading_it(db_url, devices, rows, names, tmp_path)


def _reading_it(db_url, devices, rows, names, tmp_path):
    """farm table shows each threshold's mean exit layer and speed-up; farm report draws the
    curves: one line for the model across thresholds, fp32 as a point."""
    from typer.testing import CliRunner

    from farm.api import sweep_rows
    from farm.cli import app
    from farm.exits import exit_curves, static_points

    shown = CliRunner().invoke(app, ["table", "exits", "--db", db_url])
    assert shown.exit_code == 0, shown.output
    table = shown.output.split("early exit against full depth")[1]
    for name in names:
        line = next(line for line in table.splitlines() if f" {name} " in line)
        row = rows[name]
        assert f"{row['exit_layer_mean']:.2f} / 4" in line
        assert f"{row['exit_speedup']:.2f}×" in line
    every = sweep_rows("exits", db_url)
    pool, = {r["target"] for r in every}  # the sweep's default: every device of the inventory
    (curve,) = exit_curves(every, pool, "flops").values()
    by_value = sorted(curve, key=lambda p: p["value"])
    assert [p["value"] for p in by_value] == THRESHOLDS
    assert [p["x"] for p in by_value] == sorted((p["x"] for p in by_value), reverse=True)
    assert [p["row"]["variant"] for p in static_points(every, pool, "ms")] == ["fp32"]
    made = CliRunner().invoke(app, ["report", "exits", "--out", str(tmp_path / "report"),
                                    "--db", db_url])
    assert made.exit_code == 0, made.output
    assert pool == "*"  # the sweep named no devices: its pool is all of them
    assert {r["device"] for r in every} == set(devices)
    assert (tmp_path / "report" / "pool-all-exit-latency.png").stat().st_size > 10_000
    assert "pool-all-exit-flops.png" in (tmp_path / "report" / "index.html").read_text()


# -- the Jetson stack ------------------------------------------------------------------------------
_JETSON_EXITS = """
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
from agents import flops, models
from agents.exits import Runner
from agents.methods import Variant, apply_methods
from agents.serve import Agent

model = models.build({"name": "m", "path": sys.argv[2]})
apply_methods(model, Variant.parse({"name": "ee", "early_exit": json.loads(sys.argv[3])}))
runner = Runner(model)
made = []
for ids in json.loads(sys.argv[4]):
    ids = torch.tensor([ids])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        logits, layers, ran = runner.run(inputs)
    made.append([layers[0], int(logits[0].argmax()),
                 flops.analytic_call(model, lambda: runner.run(inputs))])

class Channel(object):
    def emit(self, event, **fields):
        pass

agent = Agent(Channel())
agent.load({"name": "bert-mini"}, Variant.parse({"name": "at", "early_exit": {"exit_at": 2}}),
           1, [16], False)
job = agent.run({"key": "k", "task": "synthetic", "batch_size": 1, "seq_len": 16,
                 "measure": {"warmup": 1, "min_iters": 3, "min_seconds": 0.05}})
print(json.dumps({"examples": made, "job": job["method_fields"]}))
"""


@pytest.mark.parametrize("layout, params", [
    ("deebert", {"policy": "entropy", "threshold": 0.5}),
    ("pabee", {"policy": "patience", "patience": 2}),
    ("farm", {"policy": "confidence", "threshold": 0.8})])
def test_the_jetson_stack_exits_where_the_reference_does(trained, dev, tmp_path, jetson_python,
                                                         layout, params):
    """Python 3.6, torch 1.10, transformers 4.18: the checkpoint (as pytorch_model.bin, which
    4.18 reads; farm's exit_heads.bin as torch 2 saved it) exits each example where the
    reference does, with the same FLOPs; a catalog model's exit_at job runs through the agent."""
    import os
    import subprocess

    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from conftest import REPO

    folder = tmp_path / layout
    folder.mkdir()
    for name in ("config.json", "exit_heads.bin", "exit_heads.json"):
        if (trained[layout] / name).exists():
            (folder / name).write_bytes((trained[layout] / name).read_bytes())
    torch.save(load_file(str(trained[layout] / "model.safetensors")),
               folder / "pytorch_model.bin")
    tokenizer = AutoTokenizer.from_pretrained(str(trained[layout]))
    ids = [tokenizer(*[[t] for t in example])["input_ids"][0] for example in dev[:20]]
    done = subprocess.run([jetson_python, "-c", _JETSON_EXITS, str(REPO), str(folder),
                           json.dumps(params), json.dumps(ids)], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    policy, value = params["policy"], params.get("threshold", params.get("patience"))
    reference = layer_outputs(trained[layout], layout, dev[:20])
    expected = [reference_exit(per_layer, policy, value) for per_layer in reference]
    assert [e[0] for e in answer["examples"]] == expected
    assert [e[1] for e in answer["examples"]] == [
        max(range(LABELS), key=p[k - 1].__getitem__) for p, k in zip(reference, expected)]
    assert [e[2] for e in answer["examples"]] == [
        k * (_layer_flops(len(i)) + HEAD_FLOPS) for k, i in zip(expected, ids)]
    job = answer["job"]
    assert job["exit_layer_mean"] == 2.0 and job["exit_heads"] == "random"
    assert json.loads(job["exit_histogram"]) == [0, 16, 0, 0]
