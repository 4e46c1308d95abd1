"""FLOPs of one forward pass.

torch's own counter (torch.utils.flop_counter, torch 2.1+) is used where it exists, on the eager
attention path: on CPU it does not see inside the fused scaled-dot-product-attention kernel, and
would drop the attention matmuls (about 3% of bert-base at seq 128). On older torch (the
Jetson's 1.10) the count is analytic, by the same convention: 2 FLOPs per multiply-add of every
Linear layer, from the shapes it actually sees, plus the two attention matmuls (Q K^T and
A V: 4 b s^2 d), and a method's own module by its `farm_flops` (a sparse matmul: 2 per stored
weight and input row). Element-wise work (softmax, GELU, LayerNorm) and FNet's FFT are not counted by
either, as torch's counter does not count them.
"""

from agents.layers import is_quantized_linear

COUNTER = "torch.utils.flop_counter"
ANALYTIC = "analytic"


def count(model, inputs):
    """(FLOPs, method) for one forward pass of `model` on `inputs`."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return analytic(model, inputs), ANALYTIC
    # torch's counter skips quantized Linears, and has no formula for a sparse matmul
    if any(is_quantized_linear(m) or hasattr(m, "farm_flops") for m in model.modules()):
        return analytic(model, inputs), ANALYTIC
    import torch

    counter = FlopCounterMode(display=False)
    with _eager_attention(model), torch.no_grad(), counter:
        model(**inputs)
    return int(counter.get_total_flops()), COUNTER


class _eager_attention(object):
    """Switch a transformers model to its eager attention for the duration of a count."""

    def __init__(self, model):
        self.model = model
        self.before = getattr(model.config, "_attn_implementation", None)

    def __enter__(self):
        if self.before not in (None, "eager") and hasattr(self.model, "set_attn_implementation"):
            self.model.set_attn_implementation("eager")

    def __exit__(self, *exc):
        if self.before not in (None, "eager") and hasattr(self.model, "set_attn_implementation"):
            self.model.set_attn_implementation(self.before)


def _linear(module):
    import torch

    return isinstance(module, torch.nn.Linear) or is_quantized_linear(module)


def _query_projections(model):
    """The modules that project attention queries (BERT-style `query`, DistilBERT `q_lin`): a
    Linear, or what a method made of it (low_rank's pair)."""
    import torch

    queries = set()
    for module in model.modules():
        for name in ("query", "q_lin"):
            child = getattr(module, name, None)
            if isinstance(child, torch.nn.Module):
                queries.add(child)
    return queries


def analytic(model, inputs):
    return analytic_call(model, lambda: model(**inputs))


def analytic_call(model, call):
    """The analytic count of whatever `call()` runs of `model`'s modules (an early-exit pass
    runs some layers and some exit heads: agents/exits.py)."""
    import torch

    total = [0]

    def linear_hook(layer, args, _output):
        # A float Linear's own weight says its shape (a streamed template's in_features may be
        # the unpruned one); a quantized Linear's packed weight is not unpacked for this.
        if isinstance(layer, torch.nn.Linear):
            outputs, inputs = layer.weight.shape
        else:
            outputs, inputs = layer.out_features, layer.in_features
        total[0] += 2 * (args[0].numel() // inputs) * inputs * outputs

    def query_hook(_module, _args, output):
        # Q K^T and A V: 2 b s^2 d multiply-adds, d the queries' width (fewer with pruned heads).
        if output.dim() == 3:
            batch, seq, width = output.shape
            total[0] += 4 * batch * seq * seq * width

    def own_hook(module, args, _output):
        total[0] += int(module.farm_flops(args[0]))

    hooks = [m.register_forward_hook(linear_hook) for m in model.modules() if _linear(m)]
    # a method's own module that says what one call costs (agents/methods: farm_flops)
    hooks += [m.register_forward_hook(own_hook) for m in model.modules()
              if hasattr(m, "farm_flops")]
    hooks += [q.register_forward_hook(query_hook) for q in _query_projections(model)]
    try:
        with torch.no_grad():
            call()
    finally:
        for hook in hooks:
            hook.remove()
    return total[0]
