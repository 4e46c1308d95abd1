"""Kronecker factorization and FFN pruning (agents/methods/kronecker.py, prune_ffn.py).

Counts are checked against the shapes they follow from (REFERENCE.md), not against the code's
own output: A (m1 x n1) (x) B (m2 x n2) holds m1 n1 + m2 n2 weights and costs 2(m1 n1 n2 +
m1 m2 n2) or 2(n1 n2 m2 + m2 n1 m1) FLOPs a vector, whichever order is cheaper; the nearest
product's relative error is that of the discarded singular values of the rearranged matrix
whose rows are W's m2 x n2 blocks (Van Loan-Pitsianis); an FFN neuron of bert-base is
768 + 1 + 768 parameters.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from agents import flops, models
from agents.methods import MethodError, Variant, apply_methods
from agents.methods.precision import convert

V = Variant.parse
H, LAYERS, FFN, SEQ = 768, 12, 3072, 128
BERT_BASE_PARAMS = 109_483_778
LINEARS = ((H, H),) * 4 + ((FFN, H), (H, FFN))  # Q, K, V, attention output, FFN in, FFN out


def blocks_matrix(weight: torch.Tensor, m1: int, n1: int) -> torch.Tensor:
    """W's m2 x n2 blocks, one a row, read row by row (the test's own rearrangement)."""
    rows, columns = weight.shape
    m2, n2 = rows // m1, columns // n1
    return torch.stack([weight[i * m2:(i + 1) * m2, j * n2:(j + 1) * n2].reshape(-1)
                        for i in range(m1) for j in range(n1)])


def kron_vector_flops(rows: int, columns: int, m1: int, n1: int, terms: int = 1) -> int:
    m2, n2 = rows // m1, columns // n1
    return 2 * terms * min(n1 * n2 * m2 + m2 * n1 * m1, n1 * n2 * m1 + m1 * n2 * m2)


def bert_base_flops(linear_flops) -> int:
    """bert-base's forward pass at batch 1, seq 128, from each Linear's FLOPs a vector."""
    layer = sum(linear_flops(rows, columns) for rows, columns in LINEARS)
    return LAYERS * (SEQ * layer + 4 * SEQ * SEQ * H) + 2 * H * H + 2 * H * 2


@pytest.fixture(scope="module")
def kronecker_bert_base():
    """bert-base, its weights before, and the model after kronecker {shape: [16, 16]}."""
    model = models.build({"name": "bert-base"})
    dense = [linear.weight.detach().clone() for layer in model.bert.encoder.layer
             for linear in _linears(layer)]
    figures = apply_methods(model, V({"name": "k", "kronecker": {"shape": [16, 16]}}))
    return model, dense, figures


def _linears(layer):
    return (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value,
            layer.attention.output.dense, layer.intermediate.dense, layer.output.dense)


def test_kronecker_on_bert_base_counts_its_factor_shapes(kronecker_bert_base):
    model, _, figures = kronecker_bert_base
    saved = sum(rows * columns - (16 * 16 + (rows // 16) * (columns // 16))
                for rows, columns in LINEARS)
    assert models.parameter_count(model) == BERT_BASE_PARAMS - LAYERS * saved
    inputs = models.synthetic_inputs(model, 1, SEQ)
    expected = bert_base_flops(lambda rows, columns: kron_vector_flops(rows, columns, 16, 16))
    assert flops.count(model, inputs) == (expected, flops.COUNTER)
    assert flops.analytic(model, inputs) == expected  # what the Jetson's torch 1.10 counts
    assert figures["factorized_layers"] == 6 * LAYERS
    assert json.loads(figures["kronecker_shapes"]) == {"768x768": "16x16", "3072x768": "16x16",
                                                       "768x3072": "16x16"}
    # the model holds fewer bytes than fp32's (what `model MiB` measures on the device)
    held = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert held < 0.5 * 4 * BERT_BASE_PARAMS


def test_kronecker_error_is_the_van_loan_optimum_and_the_product_is_a_kron(kronecker_bert_base):
    """Each layer's stored error equals the optimum from the singular values of the test's own
    rearrangement, and equals ||W - A (x) B|| / ||W|| of the factors the model holds; the
    module's forward is the dense forward of A (x) B."""
    model, dense, figures = kronecker_bert_base
    optimum, held = [], []
    modules = [m for layer in model.bert.encoder.layer for m in _linears(layer)]
    for index, (weight, module) in enumerate(zip(dense, modules)):
        blocks = blocks_matrix(weight, 16, 16).double()
        # the squared singular values: svdvals for the first layer's six, the eigenvalues of
        # the 256 x 256 Gram matrix (the same numbers, a fraction of the time) for the rest
        energy = torch.linalg.svdvals(blocks) ** 2 if index < 6 else \
            torch.linalg.eigvalsh(blocks @ blocks.T).flip(0).clamp(min=0)
        optimum.append(math.sqrt(float(energy[1:].sum() / energy.sum())))
        a, b = module.factors()
        product = sum(torch.kron(a[k], b[k]) for k in range(a.shape[0])).double()
        held.append(float(torch.linalg.norm(weight.double() - product)
                          / torch.linalg.norm(weight.double())))
    stored = json.loads(figures["layer_errors"])
    assert max(abs(s - o) for s, o in zip(stored, optimum)) < 1e-4
    assert max(abs(h - o) for h, o in zip(held, optimum)) < 1e-4
    assert abs(figures["reconstruction_error"] - sum(optimum) / len(optimum)) < 1e-4
    for module in (modules[0], modules[4], modules[5]):  # 768x768, 3072x768, 768x3072
        a, b = module.factors()
        product = sum(torch.kron(a[k], b[k]) for k in range(a.shape[0]))
        x = torch.randn(2, 3, product.shape[1])
        with torch.no_grad():
            assert torch.allclose(module(x), torch.nn.functional.linear(x, product, module.bias),
                                  atol=1e-5, rtol=0)


def test_kronecker_terms_and_factor_on_a_small_model():
    """terms: r keeps r products (the rank-r SVD: its error is the optimum for r terms);
    factor: K picks for each weight the shape whose weights are nearest 1/K of the matrix's."""
    model = models.build({"name": "bert-mini"})  # hidden 256, FFN 1024, 4 layers
    dense = model.bert.encoder.layer[0].intermediate.dense.weight.detach().clone()
    figures = apply_methods(model, V({"name": "k", "kronecker": {"factor": 16, "terms": 2}}))
    shapes = json.loads(figures["kronecker_shapes"])
    for key, value in shapes.items():
        rows, columns = map(int, key.split("x"))
        m1, n1 = map(int, value.split("x"))
        best = min(abs(2 * (a * b + (rows // a) * (columns // b)) - rows * columns / 16)
                   for a in range(1, rows + 1) if rows % a == 0
                   for b in range(1, columns + 1) if columns % b == 0)
        assert abs(2 * (m1 * n1 + (rows // m1) * (columns // n1)) - rows * columns / 16) == best
    m1, n1 = map(int, shapes["1024x256"].split("x"))
    energy = torch.linalg.svdvals(blocks_matrix(dense, m1, n1).double()) ** 2
    optimum = math.sqrt(float(energy[2:].sum() / energy.sum()))
    assert json.loads(figures["layer_errors"])[4] == pytest.approx(optimum, abs=1e-4)
    module = model.bert.encoder.layer[0].intermediate.dense
    a, b = module.factors()
    assert a.shape[0] == 2
    product = sum(torch.kron(a[k], b[k]) for k in range(2))
    x = torch.randn(4, 256)
    with torch.no_grad():
        assert torch.allclose(module(x), torch.nn.functional.linear(x, product, module.bias),
                              atol=1e-5, rtol=0)
        int8 = convert(model, "int8")  # its two Linears become int8 ones; it still runs
        inputs = models.synthetic_inputs(int8, 1, 16)
        assert int8(**inputs).logits.shape == (1, 2)


@pytest.mark.parametrize("value, field, words", [
    ({"shape": [32]}, ("shape",), "[m1, n1]"),
    ({"shape": [32, 32], "factor": 4}, (), "{shape: [m1, n1]} or {factor: K}"),
    ({"factor": 1}, ("factor",), "above 1"),
    ({"factor": 4, "terms": 0}, ("terms",), "at least 1"),
    (4, (), "{shape: [m1, n1]} or {factor: K}"),
])
def test_a_bad_kronecker_setting_names_its_field(value, field, words):
    with pytest.raises(MethodError) as caught:
        V({"name": "k", "kronecker": value})
    assert caught.value.field == ("kronecker",) + field
    assert words in f"{caught.value} {caught.value.fix}"


@pytest.mark.parametrize("first", [{"kronecker": {"factor": 4}}, {"low_rank": {"rank": 0.25}}])
def test_pruning_after_a_factorization_is_refused_with_the_order_to_write(first):
    for prune in ({"prune_heads": 0.5}, {"prune_ffn": 0.5}):
        with pytest.raises(MethodError, match="replaced by an earlier method") as caught:
            apply_methods(models.build({"name": "bert-tiny"}), V({"name": "x", **first, **prune}))
        assert "before methods that factorize" in caught.value.fix


def test_a_shape_that_divides_no_weight_is_refused():
    with pytest.raises(MethodError, match="divides no encoder Linear"):
        apply_methods(models.build({"name": "bert-tiny"}),
                      V({"name": "k", "kronecker": {"shape": [7, 7]}}))


# -- FFN pruning ------------------------------------------------------------------------------------
def test_pruning_half_of_bert_bases_ffn_removes_exactly_its_neurons():
    model = models.build({"name": "bert-base"})
    up = model.bert.encoder.layer[5].intermediate.dense.weight.detach()
    down = model.bert.encoder.layer[5].output.dense.weight.detach()
    norms = up.abs().sum(1) + down.abs().sum(0)
    weakest = set(torch.argsort(norms)[:FFN // 2].tolist())
    figures = apply_methods(model, V({"name": "f", "prune_ffn": 0.5}))
    assert figures == {"neurons_pruned": LAYERS * FFN // 2}
    assert BERT_BASE_PARAMS - models.parameter_count(model) == 12 * 1536 * (768 + 1 + 768) \
        == 28_329_984
    kept = model.bert.encoder.layer[5].intermediate.dense.weight.detach()
    survivors = [i for i in range(FFN) if i not in weakest]
    assert torch.equal(kept, up[survivors])  # the strongest neurons, in their order
    assert model.config.intermediate_size == 1536
    inputs = models.synthetic_inputs(model, 1, SEQ)
    half = bert_base_flops(lambda rows, columns: 2 * (rows if rows != FFN else 1536)
                           * (columns if columns != FFN else 1536))
    assert flops.count(model, inputs) == (half, flops.COUNTER)


@pytest.mark.parametrize("name", ["distilbert-base", "albert-base-v2", "mobilebert"])
def test_ffn_pruning_finds_each_familys_ffn(name):
    from agents.catalog import CATALOG

    if name not in CATALOG:
        pytest.skip(f"no catalog entry {name}")
    model = models.build({"name": name})
    before = models.parameter_count(model)
    figures = apply_methods(model, V({"name": "f", "prune_ffn": 0.5}))
    assert figures["neurons_pruned"] > 0 and models.parameter_count(model) < before
    with torch.no_grad():
        model(**models.synthetic_inputs(model, 1, 8))


# -- streamed, and on the Jetson's stack ------------------------------------------------------------
@pytest.mark.parametrize("entry", [
    {"name": "k", "kronecker": {"factor": 8, "terms": 2}, "execution": "stream"},
    {"name": "k8", "kronecker": {"shape": [16, 16]}, "precision": "int8",
     "execution": "stream+prefetch"},
    {"name": "f", "prune_ffn": 0.5, "kronecker": {"factor": 8}, "execution": "stream"},
    {"name": "f8", "prune_ffn": 0.5, "precision": "int8", "execution": "stream"},
    # a CSR weight where the other methods' templates look for a Linear's
    {"name": "hm", "prune_heads": 0.5, "magnitude": {"sparsity": 0.5, "kernel": "sparse"},
     "execution": "stream"},
    {"name": "rm", "low_rank": {"rank": 0.25}, "magnitude": {"sparsity": 0.5, "kernel": "sparse"},
     "execution": "stream+prefetch"},
])
def test_a_streamed_model_computes_the_eager_models_logits(tmp_path, entry):
    """The layer store holds the layers as the methods left them (Kronecker factors with their
    layout, narrower FFNs): streamed, the logits are the eager transformed model's."""
    from agents import stream
    from farm import layerstore

    variant, spec = V(entry), {"name": "bert-mini"}
    eager = models.build(spec)
    figures = apply_methods(eager, variant)
    eager = convert(eager, variant.precision)
    store = layerstore.prepare(spec, variant, tmp_path)
    streamed = stream.open_model(store.folder, variant.prefetched)
    inputs = models.synthetic_inputs(eager, 2, 16)
    with torch.no_grad():
        assert torch.allclose(streamed(**inputs).logits, eager(**inputs).logits, atol=1e-5,
                              rtol=0)
        streamed(**inputs)  # a second pass reads every layer again
    manifest = streamed.farm_stream.manifest
    assert manifest["method_fields"] == json.loads(json.dumps(figures))
    if variant.precision == "fp32":
        assert flops.count(streamed, inputs)[0] == flops.count(eager, inputs)[0]


_JETSON_APPLY = """
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
from agents import models
from agents.methods import Variant, apply_methods, precision
model = models.build({"name": "mini", "path": sys.argv[2]})
variant = Variant.parse(json.loads(sys.argv[3]))
figures = apply_methods(model, variant)
model = precision.convert(model, variant.precision)
ids = torch.tensor(json.loads(sys.argv[4]))
with torch.no_grad():
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids))[0]
print(json.dumps({"figures": figures, "params": models.parameter_count(model),
                  "logits": logits.tolist()}))
"""


def test_kronecker_and_ffn_pruning_run_on_the_jetson_stack(tmp_path, jetson_python):
    """Python 3.6, torch 1.10, transformers 4.18: the same checkpoint, the same methods, the
    same factors and logits as here (fp32), and int8 runs."""
    import os
    import subprocess

    from conftest import REPO

    model = models.build({"name": "bert-mini"})
    model.config.save_pretrained(tmp_path / "mini")
    torch.save(model.state_dict(), tmp_path / "mini" / "pytorch_model.bin")
    inputs = models.synthetic_inputs(model, 2, 16)
    entry = {"name": "kf", "prune_ffn": 0.25, "kronecker": {"factor": 8, "terms": 2}}
    figures = apply_methods(model, V(entry))
    with torch.no_grad():
        expected = model(**inputs).logits
    for variant in (entry, dict(entry, precision="int8")):
        done = subprocess.run(
            [jetson_python, "-c", _JETSON_APPLY, str(REPO), str(tmp_path / "mini"),
             json.dumps(variant), json.dumps(inputs["input_ids"].tolist())],
            capture_output=True, text=True, timeout=300,
            env=dict(os.environ, PYTHONWARNINGS="ignore"))
        assert done.returncode == 0, done.stderr[-2000:]
        there = json.loads(done.stdout.strip().splitlines()[-1])
        assert there["figures"]["kronecker_shapes"] == figures["kronecker_shapes"]
        assert there["figures"]["reconstruction_error"] == pytest.approx(
            figures["reconstruction_error"], abs=1e-5)
        logits = torch.tensor(there["logits"])
        if "precision" in variant:
            assert logits.shape == expected.shape
        else:
            assert there["params"] == models.parameter_count(model)
            assert torch.allclose(logits, expected, atol=1e-4, rtol=0)


def test_the_methods_table_shows_every_figure_whole_at_160_columns():
    """What `farm submit` prints after a sweep with methods, off a terminal (160 columns): with
    every method's figures there, no number is wrapped or cut, a mask's nonzero parameters have
    a column, and its kernel is named."""
    from rich.console import Console

    from farm.results_view import methods_table

    def row(variant, ms, params, nonzero, flops, methods=(), **figures):
        spec = json.dumps({"precision": "fp32", "execution": "eager",
                           "methods": [list(m) for m in methods]}) if methods else None
        return {"sweep": "s", "job_key": variant, "device": "nano-1", "target": "nano-1",
                "model": "bert-base", "variant": variant, "variant_spec": spec,
                "task": "synthetic", "batch_size": 1, "seq_len": 128, "status": "done",
                "per_sample_ms": ms, "params": params, "nonzero_params": nonzero,
                "flops": flops, "model_memory_mb": 448.0 * params / BERT_BASE_PARAMS,
                "logits_json": "[[0.1, -0.2]]", "repeat": 1, **figures}

    rows = [row("fp32", 201.1, BERT_BASE_PARAMS, 109_380_000, 22.35e9),
            row("kron-32", 39.9, 24_705_794, 24_600_000, 1.74e9,
                [("kronecker", {"shape": [32, 32], "terms": 1})], factorized_layers=72,
                reconstruction_error=0.99779),
            row("ffn-50", 137.0, 81_153_794, 81_070_000, 15.1e9,
                [("prune_ffn", {"fraction": 0.5})], neurons_pruned=18432),
            row("heads-50", 166.5, 95_314_178, 95_220_000, 18.42e9,
                [("prune_heads", {"fraction": 0.5})], heads_pruned=72),
            row("mag-90-dense", 198.3, BERT_BASE_PARAMS, 32_940_000, 22.35e9,
                [("magnitude", {"sparsity": 0.9, "scope": "global", "kernel": "dense"})],
                sparsity=0.9, kernel="dense")]
    console = Console(width=160, record=True, color_system=None)
    console.print(methods_table("sweep s: methods against eager fp32", rows))
    text = console.export_text()
    assert "…" not in text
    table = [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]
    assert all(line[-1] in "┓┃┩│┘" for line in table)  # no line cut at the console's edge
    lines, variant = {}, None  # a row's lines: its first names the variant
    for line in text.splitlines():
        if line.startswith("│bert-base"):
            variant = line.split("│")[2].strip()
        if line.startswith("│") and variant:
            lines[variant] = lines.get(variant, "") + line
    assert "32.94" in lines["mag-90-dense"] and "kernel dense" in lines["mag-90-dense"]
    assert "109.48 (100%)" in lines["mag-90-dense"] and "22.35 (100%)" in lines["mag-90-dense"]
    assert "24.71 (23%)" in lines["kron-32"] and "1.74 (8%)" in lines["kron-32"]
    assert "neurons pruned 18432" in lines["ffn-50"] and "heads pruned 72" in lines["heads-50"]
    assert "nonzero M" in text
