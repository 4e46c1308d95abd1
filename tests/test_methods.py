"""Methods as plug-ins: a variant is a typed value (agents.methods), head pruning and low-rank
factorization are two modules of the registry, and the jobs of earlier releases keep their keys.

Counts are checked against the shapes they follow from (REFERENCE.md), not against the code's
own output: a head of bert-base is 3 x 64 x 768 + 3 x 64 + 64 x 768 parameters; a low-rank pair
of rank r in place of an m x n Linear holds r(m + n) weights; its error is the discarded
singular values' share of the energy (Eckart-Young).
"""
from __future__ import annotations

import copy
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from agents import flops, models
from agents.methods import MethodError, Variant, apply_methods
from conftest import QUICK
from farm.errors import ConfigError
from farm.sweep import Sweep, expand, load_sweep

DATA = Path(__file__).resolve().parent / "data"
V = Variant.parse

# bert-base: hidden 768, 12 layers of 12 heads of 64, FFN 3072, 2 labels.
H, LAYERS, HEADS, D, FFN = 768, 12, 12, 64, 3072
BERT_BASE_PARAMS = 109_483_778


# -- the variant grammar -------------------------------------------------------------------------
def test_named_variants_and_mappings_read_as_typed_values():
    assert (V("stream+prefetch+int8").precision, V("stream+prefetch+int8").execution) == (
        "int8", "stream+prefetch")
    heads = V({"name": "heads-50-int8", "prune_heads": 0.5, "precision": "int8"})
    assert heads.methods == (("prune_heads", {"fraction": 0.5}),) and heads.precision == "int8"
    rank = V({"name": "rank-25pct-stream", "low_rank": {"rank": 0.25}, "execution": "stream"})
    assert rank.streamed and not rank.prefetched and rank.methods[0][1] == {"rank": 0.25}
    both = V({"name": "both", "low_rank": {"rank": 64}, "prune_heads": 0.25})
    assert [m for m, _ in both.methods] == ["low_rank", "prune_heads"]  # in the order written
    # a mapping that says exactly what a named variant is, under its name, is that variant
    assert V({"name": "int8", "precision": "int8"}).identity() == {"variant": "int8"}
    assert V(heads.entry()) == heads and V("int8").entry() == "int8"


@pytest.mark.parametrize("entry, field, words", [
    ({"name": "x", "prune_head": 0.5}, "variants[1].prune_head", "unknown method"),
    ({"name": "x", "prune_heads": 1.5}, "variants[1].prune_heads", "between 0 and 1"),
    ({"name": "x", "low_rank": {"rank": 0}}, "variants[1].low_rank.rank", "at least 1"),
    ({"name": "x", "low_rank": {"rank": 1.0}}, "variants[1].low_rank.rank", "below 1"),
    ({"name": "x", "low_rank": 64}, "variants[1].low_rank", "{rank: R}"),
    ({"prune_heads": 0.5}, "variants[1].name", "needs a name"),
    ({"name": "int8", "prune_heads": 0.5}, "variants[1].name", "built-in variant"),
    ({"name": "x", "precision": "fp16", "execution": "stream"}, "variants[1].execution",
     "CUDA"),
    ({"name": "x", "precision": "bf16"}, "variants[1].precision", "unknown precision"),
    ("stream+fp16", "variants[1]", "unknown variant"),
    ({"name": "fp32-again", "prune_heads": 0.5}, None, None),  # fine: the control
])
def test_a_bad_variant_is_one_line_with_file_line_field_and_fix(write_yaml, entry, field, words):
    path = write_yaml("sweep.yaml", {"name": "s", "models": ["bert-tiny"],
                                     "variants": ["fp32", entry]})
    if field is None:
        assert len(load_sweep(path).variants) == 2
        return
    with pytest.raises(ConfigError) as caught:
        load_sweep(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:") and f": {field}: " in message and words in message
    assert "\n" not in message and caught.value.hint


def test_a_name_used_twice_is_refused_and_the_same_variant_twice_is_one(write_yaml):
    twice = write_yaml("twice.yaml", {"name": "s", "models": ["bert-tiny"], "variants": [
        {"name": "cut", "prune_heads": 0.5}, {"name": "cut", "prune_heads": 0.25}]})
    with pytest.raises(ConfigError, match=r"twice\.yaml:\d+: variants\[1\]\.name: .*used twice"):
        load_sweep(twice)
    same = write_yaml("same.yaml", {"name": "s", "models": ["bert-tiny"],
                                    "variants": ["int8", "int8", {"name": "int8",
                                                                  "precision": "int8"}]})
    assert [v.name for v in load_sweep(same).variants] == ["int8"]


def test_a_method_that_does_not_compose_is_refused(tmp_path, monkeypatch, write_yaml):
    plugin = tmp_path / "eager_only.py"
    plugin.write_text("from agents.methods import MethodError\nNAME = 'eager_only'\n"
                      "CUDA = True\nINT8 = False\nSTREAM = False\n"
                      "def parameters(value):\n    return {'on': bool(value)}\n"
                      "def apply(model, params):\n    return {}\n")
    monkeypatch.setenv("FARM_METHODS", str(plugin))
    for extra, field in (({"precision": "int8"}, "precision"), ({"execution": "stream"},
                                                                 "execution")):
        path = write_yaml("sweep.yaml", {"name": "s", "models": ["bert-tiny"], "variants": [
            dict({"name": "e", "eager_only": True}, **extra)]})
        with pytest.raises(ConfigError, match=rf"variants\[0\]\.{field}: eager_only does not "
                                              "compose"):
            load_sweep(path)


# -- keys of earlier releases --------------------------------------------------------------------
# Job keys computed by the release before typed variants (commit 18ec81e) for this sweep:
# models bert-base and distilbert-base, batch sizes 1 and 8, seq 128, target nano-2gb.
RELEASE_KEYS = {
    "bert-base fp32 b1": "83f870bbca0812ed", "bert-base fp32 b8": "5b6cae058686a23f",
    "bert-base int8 b1": "0e5c3d4b7f1fa522", "bert-base int8 b8": "00223c991819ac21",
    "bert-base fp16 b1": "cba62f7211a42e17", "bert-base fp16 b8": "176cb8d4a96bc63e",
    "bert-base stream b1": "cbf719038284537d", "bert-base stream b8": "411f10c93ec65d87",
    "bert-base stream+prefetch b1": "c7222b5636622a54",
    "bert-base stream+prefetch b8": "600e7e67cefd8977",
    "bert-base stream+int8 b1": "3413481910055dad", "bert-base stream+int8 b8": "e534b00a592a8ce5",
    "bert-base stream+prefetch+int8 b1": "dc5ff2bdac0fd611",
    "bert-base stream+prefetch+int8 b8": "745c1ccf0dc1748e",
    "distilbert-base fp32 b1": "0834f843240dda4c", "distilbert-base fp32 b8": "98774611db79d556",
    "distilbert-base int8 b1": "a7f22a5e6dfdefa8", "distilbert-base int8 b8": "fca97f0e632d294b",
    "distilbert-base fp16 b1": "fa0b62d963f14640", "distilbert-base fp16 b8": "70451a24c2f399f6",
    "distilbert-base stream b1": "fb7f2ec676c4c6cc",
    "distilbert-base stream b8": "3d5e2c8f47b6b5d1",
    "distilbert-base stream+prefetch b1": "e821d9d4187b4193",
    "distilbert-base stream+prefetch b8": "9549d8b7e9d7dd2e",
    "distilbert-base stream+int8 b1": "4c5f88d39c0f96c7",
    "distilbert-base stream+int8 b8": "61bfca8066a7c558",
    "distilbert-base stream+prefetch+int8 b1": "27d68d820937bfc2",
    "distilbert-base stream+prefetch+int8 b8": "7d5a0e00604b4ec7",
}


def test_named_variants_keep_the_keys_of_earlier_releases():
    names = ["fp32", "int8", "fp16", "stream", "stream+prefetch", "stream+int8",
             "stream+prefetch+int8"]
    sweep = Sweep.model_validate({
        "name": "keys", "models": ["bert-base", "distilbert-base"],
        "variants": names + [{"name": "heads-50", "prune_heads": 0.5}],
        "batch_sizes": [1, 8], "seq_lens": [128]}, context={"base_dir": "/"})
    keys = {f"{j.model.name} {j.variant.name} b{j.batch_size}": j.key
            for j in expand(sweep, ["nano-2gb"])}
    assert {k: v for k, v in keys.items() if "heads" not in k} == RELEASE_KEYS
    assert len(set(keys.values())) == len(keys)  # the new variant is new work


def test_resubmitting_a_sweep_stored_by_the_previous_release_runs_nothing(tmp_path):
    """tests/data/release-0.1/farm.db was written by the release before typed variants (all
    its named variants, synthetic and GLUE jobs). Submitting its sweep file again opens and
    migrates that database, runs 0 jobs (no device, no Ray is needed), and leaves every result
    as it was."""
    from farm.api import submit

    release = tmp_path / "release"
    shutil.copytree(DATA / "release-0.1", release)
    db = release / "farm.db"

    def results() -> dict:
        with sqlite3.connect(db) as connection:
            connection.row_factory = sqlite3.Row
            return {r["job_id"]: dict(r) for r in connection.execute("select * from results")}

    before = results()
    report = submit(release / "sweep.yaml", release / "inventory.yaml", db=f"sqlite:///{db}")
    assert report.ran == 0 and report.total_jobs == 24 == len(before)
    assert report.counts == {"done": 24}
    after = results()
    assert {job: {k: row[k] for k in before[job]} for job, row in after.items()} == before


# -- head pruning ----------------------------------------------------------------------------------
def _bert_flops(seq: int, heads: int = HEADS, rank=None, *, hidden: int = H,
                layers: int = LAYERS, head_size: int = D, ffn: int = FFN) -> int:
    """A BERT forward pass at batch 1 from its shapes (bert-base's unless told): every Linear
    2 x multiply-adds (a low-rank pair where it holds fewer weights), the two attention matmuls
    4 s^2 d, the pooler and the 2-label classifier on the [CLS] token only."""
    def linear(rows: int, columns: int) -> int:
        r = _rank(rank, rows, columns)
        return 2 * seq * (r * (rows + columns) if r else rows * columns)
    width = heads * head_size
    layer = 3 * linear(width, hidden) + linear(hidden, width) + linear(ffn, hidden) \
        + linear(hidden, ffn)
    return layers * (layer + 4 * seq * seq * width) + 2 * hidden * hidden + 2 * hidden * 2


def _rank(rank, rows: int, columns: int) -> int | None:
    """The rank a rows x columns Linear is factorized at, or None where it stays dense."""
    if rank is None:
        return None
    r = max(1, int(rank * min(rows, columns) + 0.5)) if isinstance(rank, float) else rank
    return r if r * (rows + columns) < rows * columns else None


@pytest.fixture(scope="module")
def bert_base():
    """A fresh bert-base for each test: copies of one build (a build takes seconds)."""
    built = models.build({"name": "bert-base"})
    return lambda: copy.deepcopy(built)


def test_pruning_half_of_bert_bases_heads_removes_exactly_their_weights(bert_base):
    model = bert_base()
    inputs = models.synthetic_inputs(model, 1, 128)
    figures = apply_methods(model, V({"name": "h", "prune_heads": 0.5}))
    per_head = 3 * D * H + 3 * D + D * H  # Q, K, V rows and biases; the output's columns
    assert per_head == 196_800
    assert figures == {"heads_pruned": 6 * LAYERS}
    assert BERT_BASE_PARAMS - models.parameter_count(model) == 6 * LAYERS * per_head == 14_169_600
    counted, method = flops.count(model, inputs)
    assert method == flops.COUNTER
    assert abs(counted - _bert_flops(128, heads=6)) <= 0.01 * _bert_flops(128, heads=6)
    assert flops.analytic(model, inputs) == counted  # torch 1.10's count sees the pruned shapes
    kept = model.bert.encoder.layer[0].attention.self
    assert kept.query.weight.shape == (6 * D, H) and kept.num_attention_heads == 6
    assert model.config.pruned_heads[0] == sorted(model.config.pruned_heads[0])


def test_the_weakest_heads_go(bert_base):
    """The heads removed are those whose output-projection columns have the smallest L1 norm."""
    model = bert_base()
    dense = model.bert.encoder.layer[3].attention.output.dense.weight.detach()
    norms = [float(dense[:, h * D:(h + 1) * D].abs().sum()) for h in range(HEADS)]
    weakest = sorted(sorted(range(HEADS), key=lambda h: norms[h])[:3])
    apply_methods(model, V({"name": "h", "prune_heads": 0.25}))
    assert model.config.pruned_heads[3] == weakest


# -- low rank --------------------------------------------------------------------------------------
def _low_rank_expectations(model, rank) -> tuple[int, list[float]]:
    """From the dense model: its parameter count once factorized at `rank`, and each factorized
    Linear's optimal relative error (the discarded singular values' share of the energy)."""
    params, optimum = models.parameter_count(model), []
    for linear in (m for m in model.bert.encoder.layer.modules()
                   if isinstance(m, torch.nn.Linear)):
        rows, columns = linear.weight.shape
        r = _rank(rank, rows, columns)
        if r:
            params += r * (rows + columns) - rows * columns
            # the squared singular values: the eigenvalues of the smaller Gram matrix, in
            # double (quicker than svdvals on bert-base's 72 Linears, and not this code's SVD)
            weight = linear.weight.detach().double()
            gram = weight @ weight.T if rows <= columns else weight.T @ weight
            energy = torch.linalg.eigvalsh(gram).flip(0).clamp(min=0)
            optimum.append(float(torch.sqrt(energy[r:].sum() / energy.sum())))
    return params, optimum


def test_low_rank_on_bert_base_counts_its_factor_shapes_and_its_error_is_the_optimum(bert_base):
    model = bert_base()
    params, optimum = _low_rank_expectations(model, 0.25)
    inputs = models.synthetic_inputs(model, 1, 128)
    figures = apply_methods(model, V({"name": "r", "low_rank": {"rank": 0.25}}))
    assert figures["factorized_layers"] == len(optimum) == 6 * LAYERS
    assert models.parameter_count(model) == params
    assert abs(figures["reconstruction_error"] - sum(optimum) / len(optimum)) < 1e-4
    counted, _ = flops.count(model, inputs)
    assert counted == _bert_flops(128, rank=0.25)
    assert flops.analytic(model, inputs) == counted  # torch 1.10's count sees the pairs


@pytest.mark.parametrize("rank", [0.5, 150])
def test_a_pair_that_would_not_save_weights_stays_dense(rank):
    """bert-mini (hidden 256, FFN 1024): at half rank a 256 x 256 pair would hold as many
    weights as the matrix, so only the FFN's Linears are factorized; so at rank 150 (150 x 1280
    < 256 x 1024 for the FFN's, 150 x 512 > 256 x 256 for the attention's)."""
    model = models.build({"name": "bert-mini"})
    params, optimum = _low_rank_expectations(model, rank)
    inputs = models.synthetic_inputs(model, 1, 64)
    figures = apply_methods(model, V({"name": "r", "low_rank": {"rank": rank}}))
    assert figures["factorized_layers"] == len(optimum) == 2 * 4
    assert models.parameter_count(model) == params
    assert abs(figures["reconstruction_error"] - sum(optimum) / len(optimum)) < 1e-4
    counted, _ = flops.count(model, inputs)
    assert counted == _bert_flops(64, 4, rank, hidden=256, layers=4, head_size=64, ffn=1024)


def test_a_rank_that_saves_nothing_leaves_the_model_dense():
    model = models.build({"name": "bert-tiny"})
    before = models.parameter_count(model)
    figures = apply_methods(model, V({"name": "r", "low_rank": {"rank": 500}}))
    assert figures == {"factorized_layers": 0, "reconstruction_error": None, "layer_errors": "[]"}
    assert models.parameter_count(model) == before


# -- a checkpoint saved after pruning ---------------------------------------------------------------
@pytest.mark.parametrize("method", [{"prune_heads": 0.5}, {"prune_ffn": 0.25}])
def test_a_checkpoint_saved_after_pruning_loads_as_it_is(tmp_path, method):
    model = models.build({"name": "bert-mini"})
    apply_methods(model, V({"name": "h", **method}))
    model.save_pretrained(tmp_path / "pruned")
    loaded = models.build({"name": "pruned", "path": str(tmp_path / "pruned")})
    inputs = models.synthetic_inputs(model, 2, 16)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)
    assert models.parameter_count(loaded) == models.parameter_count(model)


# -- a method from outside farm --------------------------------------------------------------------
THROWAWAY = '''"""A method the test writes: the classifier's outputs scaled by a factor."""
from agents.methods import MethodError

NAME = "scale_logits"
SUMMARY = "multiply the classifier's weights and bias by a factor"
CUDA = True
INT8 = True
STREAM = False
FIELDS = (("scaled_by", "float", "", "the factor"),)


def parameters(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise MethodError("scale_logits is %r" % (value,), "write a factor above 0")
    return {"factor": float(value)}


def apply(model, params):
    import torch

    with torch.no_grad():
        model.classifier.weight.mul_(params["factor"])
        model.classifier.bias.mul_(params["factor"])
    return {"scaled_by": params["factor"]}
'''


def test_a_method_written_outside_farm_runs_end_to_end(cgroups, tmp_path, monkeypatch,
                                                       write_yaml, db_url, device_names):
    """One file named in $FARM_METHODS, touching no module of farm: the sweep validates its
    parameter, the controller and the agent (a cgroup device, real Ray) run it, and its figure
    is stored with the result."""
    import json

    from farm.api import submit
    from farm.comparisons import compare

    plugin = tmp_path / "scale_logits.py"
    plugin.write_text(THROWAWAY)
    monkeypatch.setenv("FARM_METHODS", str(plugin))
    inventory = write_yaml("inventory.yaml", {"devices": [  # two: 3 agents' loads on 2 cores
        {"name": device, "kind": "cgroup", "memory": "2GiB", "cpus": 1}
        for device in device_names(2)]})
    bad = write_yaml("bad.yaml", {"name": "p", "models": ["bert-tiny"], "variants": [
        "fp32", {"name": "x3", "scale_logits": -1}]})
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: variants\[1\]\.scale_logits: "
                                          "scale_logits is -1"):
        submit(bad, inventory, db=db_url)
    sweep = write_yaml("sweep.yaml", {
        "name": "plugin", "models": ["bert-tiny"], "batch_sizes": [2], "seq_lens": [16],
        "measure": QUICK, "retries": 0, "variants": [
            "fp32", {"name": "x3", "scale_logits": 3}, {"name": "x3-int8", "scale_logits": 3,
                                                        "precision": "int8"}]})
    report = submit(sweep, inventory, db=db_url)
    assert report.counts == {"done": 3}
    rows = {r["variant"]: r for r in report.results}
    fp32, x3 = (json.loads(rows[v]["logits_json"]) for v in ("fp32", "x3"))
    assert torch.allclose(torch.tensor(x3), 3 * torch.tensor(fp32), atol=1e-5)
    assert json.loads(rows["x3"]["extra_json"]) == {"scaled_by": 3.0}
    assert rows["fp32"]["extra_json"] is None
    gaps = {c.result["variant"]: c.logit_gap for c in compare(report.results)}
    assert gaps["x3"] == pytest.approx(2 * torch.tensor(fp32).abs().max().item(), abs=1e-5)
    assert gaps["fp32"] is None


_JETSON_LOADER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
from agents import models
model = models.build({"name": "pruned", "path": sys.argv[2]})
ids = torch.tensor(json.loads(sys.argv[3]))
with torch.no_grad():
    print(json.dumps(model(input_ids=ids, attention_mask=torch.ones_like(ids))[0].tolist()))
"""


def test_the_jetson_stack_loads_a_checkpoint_saved_after_pruning_here(tmp_path, jetson_python):
    """Saved here (transformers 5, which no longer prunes by itself), loaded by transformers
    4.18 from its config's pruned_heads, with the same outputs."""
    import json
    import os
    import subprocess

    from conftest import REPO

    model = models.build({"name": "bert-mini"})
    apply_methods(model, V({"name": "h", "prune_heads": 0.5}))
    # transformers 5 writes safetensors only, which 4.18 cannot read (farm converts them when
    # it uploads a checkpoint to a board): the file older versions read instead.
    model.config.save_pretrained(tmp_path / "pruned")
    torch.save(model.state_dict(), tmp_path / "pruned" / "pytorch_model.bin")
    inputs = models.synthetic_inputs(model, 2, 16)
    with torch.no_grad():
        expected = model(**inputs)[0]
    done = subprocess.run([jetson_python, "-c", _JETSON_LOADER, str(REPO), str(tmp_path / "pruned"),
                           json.dumps(inputs["input_ids"].tolist())], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert done.returncode == 0, done.stderr[-2000:]
    logits = torch.tensor(json.loads(done.stdout.strip().splitlines()[-1]))
    assert torch.allclose(logits, expected, atol=1e-5, rtol=0)
