"""magnitude: one-shot magnitude pruning of the encoder Linears' weights (agents/methods/
magnitude.py), with its dense and sparse CSR kernels, eager and streamed, here and on the
Jetson's Python 3.6 / torch 1.10.

Every figure is checked against what the test counts itself: the zeros it finds in the weights,
a mask it computes with its own threshold, FLOPs from the Linears' shapes and nonzeros.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess

import pytest
import torch

from agents import flops, models, stream
from agents.methods import MethodError, Variant, apply_methods, magnitude, precision
from conftest import REPO
from farm import layerstore

V = Variant.parse
SEQ = 16


def _encoder_linears(model):
    """The encoder's Linears, in module order, each once (found by the test, not the method)."""
    found = []
    for layer in model.bert.encoder.layer:
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear) and all(module is not f for f in found):
                found.append(module)
    return found


def _zeros(tensors):
    return sum(int((t == 0).sum()) for t in tensors)


def _mask_by_hand(weights, share):
    """Zero the round(share x N) smallest |w| of all `weights` together, ties in order."""
    total = sum(w.numel() for w in weights)
    count = round(share * total)
    with torch.no_grad():
        flat = torch.cat([w.abs().flatten() for w in weights])
        threshold = torch.kthvalue(flat, count).values
        less = int((flat < threshold).sum())
        tied = (flat == threshold).nonzero().flatten()[:count - less]
        keep = flat >= threshold
        keep[tied] = False
        del flat
        start = 0
        for w in weights:
            w.mul_(keep[start:start + w.numel()].view_as(w))
            start += w.numel()
    return count


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs)[0]


def _sparse_class():
    return magnitude.sparse_linear_class()


# -- bert-base, the must-show: the dense kernel --------------------------------------------------
@pytest.fixture(scope="module")
def bert_base():
    """(pruned by the method and its figures, dense figures, the same model masked by hand)."""
    dense = models.build({"name": "bert-base"})
    pruned = copy.deepcopy(dense)
    figures = apply_methods(pruned, V({"name": "m90", "magnitude": {"sparsity": 0.9}}))
    inputs = models.synthetic_inputs(dense, 1, SEQ)
    before = {"params": models.parameter_count(dense), "nonzero": models.nonzero_count(dense),
              "flops": flops.count(dense, inputs),
              "zeros": _zeros([m.weight for m in _encoder_linears(dense)])}
    count = _mask_by_hand([m.weight for m in _encoder_linears(dense)], 0.9)
    return pruned, figures, before, dense, count, inputs


def test_bert_base_at_90_percent_is_the_global_mask_at_the_dense_models_cost(bert_base):
    pruned, figures, before, by_hand, count, inputs = bert_base
    weights = [m.weight for m in _encoder_linears(pruned)]
    total = sum(w.numel() for w in weights)
    assert total == 12 * (4 * 768 * 768 + 2 * 768 * 3072)  # 84,934,656 encoder weights
    zeros = _zeros(weights)
    assert figures["kernel"] == "dense"
    assert abs(figures["sparsity"] - 0.9) <= 0.005
    assert figures["sparsity"] == zeros / total and zeros == count  # exactly round(0.9 N)
    # stored: every weight, zeros included; nonzero: fewer by exactly the zeros added (random
    # weights of this size hold a few exact zeros already)
    assert models.parameter_count(pruned) == before["params"]
    assert models.nonzero_count(pruned) == before["nonzero"] - (zeros - before["zeros"])
    assert torch.equal(_logits(pruned, inputs), _logits(by_hand, inputs))
    assert flops.count(pruned, inputs) == before["flops"]  # same dense kernels, same FLOPs


# -- bert-mini: the rest ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mini():
    return models.build({"name": "bert-mini"})


def test_scope_layer_prunes_each_linear_to_the_share(mini):
    model = copy.deepcopy(mini)
    figures = apply_methods(model, V({"name": "l", "magnitude": {"sparsity": 0.7,
                                                                 "scope": "layer"}}))
    linears = _encoder_linears(model)
    assert len(linears) == 4 * 6
    for linear in linears:
        n = linear.weight.numel()
        assert abs(_zeros([linear.weight]) / n - 0.7) <= 1 / n
    assert figures["sparsity"] == pytest.approx(
        _zeros([m.weight for m in linears]) / sum(m.weight.numel() for m in linears))
    weights = set(id(m.weight) for m in linears)
    before = mini.state_dict()
    for name, tensor in model.state_dict(keep_vars=True).items():  # nothing else changed
        assert id(tensor) in weights or torch.equal(tensor, before[name]), name


def test_the_sparse_kernel_computes_the_masked_model_and_counts_its_stored_weights(mini):
    masked, sparse = copy.deepcopy(mini), copy.deepcopy(mini)
    apply_methods(masked, V({"name": "d", "magnitude": {"sparsity": 0.9}}))
    figures = apply_methods(sparse, V({"name": "s", "magnitude": {"sparsity": 0.9,
                                                                  "kernel": "sparse"}}))
    assert figures["kernel"] == "sparse_csr" and abs(figures["sparsity"] - 0.9) <= 0.005
    assert not _encoder_linears(sparse)  # every encoder Linear replaced
    replaced = [m for m in sparse.bert.encoder.layer.modules() if isinstance(m, _sparse_class())]
    assert len(replaced) == 24
    inputs = models.synthetic_inputs(mini, 1, SEQ)
    assert torch.allclose(_logits(sparse, inputs), _logits(masked, inputs), atol=1e-4, rtol=0)
    dense_flops, _ = flops.count(mini, inputs)
    skipped = 0
    for linear in _encoder_linears(masked):  # the masked twin says each one's shape and zeros
        out_features, in_features = linear.weight.shape
        nonzero = int((linear.weight != 0).sum())
        skipped += 2 * SEQ * (in_features * out_features - nonzero)
    assert flops.count(sparse, inputs) == (dense_flops - skipped, "analytic")
    zeros = _zeros([m.weight for m in _encoder_linears(masked)])
    assert models.parameter_count(sparse) == models.parameter_count(mini) - zeros
    assert models.nonzero_count(sparse) == models.nonzero_count(masked)


def test_the_sparse_kernel_says_dense_where_torch_has_no_csr_matmul(mini, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("no CSR here")

    monkeypatch.setattr(torch, "sparse_csr_tensor", refuse)
    magnitude.csr_problem.cache_clear()  # the probe runs again, and again after this test
    try:
        model = copy.deepcopy(mini)
        figures = apply_methods(model, V({"name": "s", "magnitude": {"sparsity": 0.5,
                                                                     "kernel": "sparse"}}))
    finally:
        magnitude.csr_problem.cache_clear()
    assert figures["kernel"] == "dense (torch %s has no CPU sparse CSR matmul)" % torch.__version__
    assert len(_encoder_linears(model)) == 24 and abs(figures["sparsity"] - 0.5) <= 0.005


def test_a_checkpoint_masked_elsewhere_reports_its_sparsity_and_is_left_as_it_is(mini, tmp_path):
    ticket = copy.deepcopy(mini)
    weights = [m.weight for m in _encoder_linears(ticket)]
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for w in weights:  # a mask no magnitude threshold would make
            w.mul_((torch.rand(w.shape, generator=generator) > 0.8).float())
    zeros, total = _zeros(weights), sum(w.numel() for w in weights)
    ticket.save_pretrained(tmp_path / "ticket")
    spec = {"name": "x", "path": str(tmp_path / "ticket")}
    plain, loaded, sparse = models.build(spec), models.build(spec), models.build(spec)
    figures = apply_methods(loaded, V({"name": "t", "magnitude": {"mask": "checkpoint"}}))
    assert figures == {"sparsity": zeros / total, "kernel": "dense"}
    assert 0.79 < figures["sparsity"] < 0.81
    unchanged = zip(plain.state_dict().values(), loaded.state_dict().values())
    assert all(torch.equal(a, b) for a, b in unchanged)
    inputs = models.synthetic_inputs(mini, 2, SEQ)
    expected = _logits(plain, inputs)
    assert torch.equal(_logits(loaded, inputs), expected)
    figures = apply_methods(sparse, V({"name": "ts", "magnitude": {"mask": "checkpoint",
                                                                   "kernel": "sparse"}}))
    assert figures == {"sparsity": zeros / total, "kernel": "sparse_csr"}
    assert torch.allclose(_logits(sparse, inputs), expected, atol=1e-4, rtol=0)


# -- streamed ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, kernel, execution", [
    ("fp32", "dense", "stream"), ("int8", "dense", "stream"), ("fp32", "sparse", "stream"),
    ("fp32", "sparse", "stream+prefetch")])
def test_a_streamed_pruned_model_computes_the_eager_ones_logits(kind, kernel, execution,
                                                                tmp_path):
    spec = {"name": "bert-mini"}
    variant = V({"name": "m", "magnitude": {"sparsity": 0.9, "kernel": kernel},
                 "precision": kind, "execution": execution})
    store = layerstore.prepare(spec, variant, root=tmp_path)
    model = stream.open_model(store.folder, variant.prefetched)
    eager = models.build(spec)
    figures = apply_methods(eager, variant)
    eager = precision.convert(eager, kind)
    inputs = models.synthetic_inputs(eager, 2, SEQ)
    expected = _logits(eager, inputs)
    first, second = _logits(model, inputs), _logits(model, inputs)
    assert torch.allclose(first, expected, atol=1e-5, rtol=0), (first, expected)
    assert torch.equal(first, second)  # every layer was read again, and ran again
    streamer = model.farm_stream
    assert streamer.manifest["method_fields"] == figures
    stored = [t["name"] for unit in streamer.manifest["units"] for t in unit["tensors"]]
    assert any(n.endswith(".values") for n in stored) == (kernel == "sparse")
    if kernel == "sparse":  # the templates hold CSR weights, and no layer stays mapped
        assert any(isinstance(m, _sparse_class()) for m in model.farm_layer_templates.modules())
        assert all(slot.unit is None and slot.mapping is None for slot in streamer.slots)
    streamer.close()


def test_a_template_layer_is_shaped_for_csr_weights_only_where_the_store_has_them(mini):
    from agents.layers import StoreError

    def entries(*names):
        return [{"name": n, "kind": "buffer" if n.endswith("indices") else "param",
                 "shape": [1], "dtype": "float32"} for n in names]

    layer = copy.deepcopy(mini.bert.encoder.layer[0])
    kinds = [type(m) for m in layer.modules()]
    magnitude.fit_template(layer, entries("attention.self.query.weight",
                                          "attention.self.query.bias"))
    assert [type(m) for m in layer.modules()] == kinds  # a dense layer: nothing to do
    magnitude.fit_template(layer, entries("attention.self.query.values",
                                          "attention.self.query.crow_indices",
                                          "attention.self.query.col_indices",
                                          "attention.self.query.size", "output.dense.values",
                                          "output.dense.crow_indices"))
    query, output = layer.attention.self.query, layer.output.dense
    assert isinstance(query, _sparse_class()) and isinstance(output, _sparse_class())
    assert query.bias is None and output.bias is None  # no bias stored: none held
    assert set(query._parameters) == {"values", "bias"}
    assert set(query._buffers) == {"crow_indices", "col_indices", "size"}
    assert isinstance(layer.attention.self.key, torch.nn.Linear)
    with pytest.raises(StoreError, match="intermediate.dense.0"):  # a pair nobody shaped
        magnitude.fit_template(layer, entries("intermediate.dense.0.values",
                                              "intermediate.dense.0.crow_indices"))


# -- the sweep's values -------------------------------------------------------------------------
def test_values_are_written_canonically_and_the_sparse_kernel_is_cheaper():
    assert magnitude.parameters({"sparsity": 0.9}) == {"sparsity": 0.9, "scope": "global",
                                                       "kernel": "dense"}
    assert magnitude.parameters({"sparsity": 0.5, "scope": "layer", "kernel": "sparse"}) == {
        "sparsity": 0.5, "scope": "layer", "kernel": "sparse"}
    assert magnitude.parameters({"mask": "checkpoint"}) == {"mask": "checkpoint",
                                                            "kernel": "dense"}
    variant = V({"name": "m90-int8", "magnitude": {"sparsity": 0.9}, "precision": "int8"})
    assert V(variant.entry()) == variant
    dense = V({"name": "d", "magnitude": {"sparsity": 0.9}})
    sparse = V({"name": "s", "magnitude": {"sparsity": 0.9, "kernel": "sparse"},
                "execution": "stream"})
    assert sparse.cost() < dense.cost() == 1.0
    from agents.methods import result_fields, table_fields

    assert {"sparsity", "kernel"} <= set(f[0] for f in table_fields())
    assert ("sparsity", "float") in [(f[0], f[1]) for f in result_fields()]


@pytest.mark.parametrize("value, field", [
    ({"sparsity": 1.0}, ("sparsity",)),
    ({"sparsity": 0}, ("sparsity",)),
    ({"sparsity": -0.5}, ("sparsity",)),
    ({"sparsity": "90%"}, ("sparsity",)),
    ({"sparsity": True}, ("sparsity",)),
    ({"sparsity": 0.9, "scope": "row"}, ("scope",)),
    ({"sparsity": 0.9, "kernel": "csr"}, ("kernel",)),
    ({"sparsity": 0.9, "ratio": 2}, ("ratio",)),
    ({"mask": "lottery"}, ("mask",)),
    ({"mask": "checkpoint", "sparsity": 0.5}, ("sparsity",)),
    ({"mask": "checkpoint", "scope": "layer"}, ("scope",)),
    ({"scope": "layer"}, ("sparsity",)),
    (0.9, ()),
])
def test_a_bad_value_names_its_parameter_and_the_fix(value, field):
    with pytest.raises(MethodError) as caught:
        V({"name": "m", "magnitude": value})
    error = caught.value
    assert error.field == ("magnitude",) + field
    assert "\n" not in error.problem and error.fix and "\n" not in error.fix


@pytest.mark.parametrize("kind", ["int8", "fp16"])
def test_the_sparse_kernel_refuses_int8_and_fp16(kind):
    with pytest.raises(MethodError) as caught:
        V({"name": "m", "magnitude": {"sparsity": 0.9, "kernel": "sparse"}, "precision": kind})
    assert caught.value.field[:2] == ("magnitude", "kernel")
    assert "kernel: dense" in caught.value.fix and ("precision: %s" % kind) in caught.value.fix
    V({"name": "m", "magnitude": {"sparsity": 0.9}, "precision": kind})  # dense: fine


# -- the Jetson's stack ------------------------------------------------------------------------
_JETSON = """
import copy, json, sys
sys.path.insert(0, sys.argv[1])
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification
from agents import stream
from agents.methods import Variant, apply_methods
torch.manual_seed(0)
config = AutoConfig.for_model("bert", num_hidden_layers=2, hidden_size=128,
                              num_attention_heads=2, intermediate_size=512, vocab_size=1000)
dense = AutoModelForSequenceClassification.from_config(config).eval()
sparse = copy.deepcopy(dense)
apply_methods(dense, Variant.parse({"name": "d", "magnitude": {"sparsity": 0.9}}))
figures = apply_methods(sparse, Variant.parse(
    {"name": "s", "magnitude": {"sparsity": 0.9, "kernel": "sparse"}}))
ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    a = dense(input_ids=ids)[0]
    b = sparse(input_ids=ids)[0]
kinds = sorted(set(type(m).__name__ for m in sparse.bert.encoder.layer.modules()))
inputs = {k: torch.tensor(v) for k, v in json.loads(sys.argv[3]).items()}
streamed = {}
for prefetch in (False, True):
    model = stream.open_model(sys.argv[2], prefetch)
    with torch.no_grad():
        streamed[str(prefetch)] = model(**inputs)[0].tolist()
    model.farm_stream.close()
print(json.dumps({"figures": figures, "gap": float((a - b).abs().max()), "kinds": kinds,
                  "torch": torch.__version__, "python": sys.version_info[:2],
                  "streamed": streamed}))
"""


def test_the_jetson_stack_runs_the_sparse_kernel(jetson_python, tmp_path):
    """Python 3.6 / torch 1.10 / transformers 4.18: the sparse kernel computes the masked
    model there, and streams a sparse store written here to this torch's eager logits."""
    variant = V({"name": "s", "magnitude": {"sparsity": 0.9, "kernel": "sparse"},
                 "execution": "stream"})
    store = layerstore.prepare({"name": "bert-tiny"}, variant, root=tmp_path)
    eager = models.build({"name": "bert-tiny"})
    apply_methods(eager, variant)
    inputs = models.synthetic_inputs(eager, 2, SEQ)
    expected = _logits(eager, inputs)
    done = subprocess.run(
        [jetson_python, "-c", _JETSON, str(REPO), store.folder,
         json.dumps({k: v.tolist() for k, v in inputs.items()})],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["python"] == [3, 6] and report["torch"].startswith("1.10")
    assert report["figures"]["kernel"] == "sparse_csr"
    assert abs(report["figures"]["sparsity"] - 0.9) <= 0.005
    assert "SparseLinear" in report["kinds"] and "Linear" not in report["kinds"]
    assert report["gap"] <= 1e-5
    for logits in report["streamed"].values():
        assert torch.allclose(torch.tensor(logits), expected, atol=1e-5, rtol=0)
