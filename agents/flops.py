"""FLOPs of one forward pass.

torch's own counter (torch.utils.flop_counter, torch 2.1+) is used where it exists, on the eager
attention path: on CPU it does not see inside the fused scaled-dot-product-attention kernel, and
would drop the attention matmuls (about 3% of bert-base at seq 128). On older torch (the
Jetson's 1.10) the count is analytic, by the same convention: 2 FLOPs per multiply-add of every
Linear layer, from the shapes it actually sees, plus the two attention matmuls (Q K^T and
A V: 4 b s^2 d). Element-wise work (softmax, GELU, LayerNorm) and FNet's FFT are not counted by
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
    if any(is_quantized_linear(m) for m in model.modules()):  # torch's counter skips these
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
    """The Linear layers that project attention queries (BERT-style `query`, DistilBERT `q_lin`)."""
    queries = set()
    for module in model.modules():
        for name in ("query", "q_lin"):
            child = getattr(module, name, None)
            if child is not None and _linear(child):
                queries.add(child)
    return queries


def analytic(model, inputs):
    import torch

    total = [0]
    queries = _query_projections(model)

    def linear_hook(layer, args, _output):
        x = args[0]
        rows = x.numel() // layer.in_features
        total[0] += 2 * rows * layer.in_features * layer.out_features
        if layer in queries and x.dim() == 3:
            batch, seq = x.shape[0], x.shape[1]
            total[0] += 4 * batch * seq * seq * layer.out_features

    hooks = [m.register_forward_hook(linear_hook) for m in model.modules() if _linear(m)]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return total[0]
