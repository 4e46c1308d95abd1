"""prune_ffn: F -- structured pruning of the feed-forward network's intermediate neurons.

In every encoder layer the fraction F of the FFN's intermediate neurons (rounded to the nearest
whole neuron, at least one kept) whose weights have the smallest L1 norm -- its row of the first
Linear and its column of the second, summed -- is removed: those rows (and their biases) of the
first Linear and those columns of the second go, so both matrices shrink and the dense kernels
do less work; the second Linear's bias stays. Every layer keeps the same number of neurons, so
the model's config records the new width (intermediate_size; DistilBERT's hidden_dim) and a
checkpoint saved after pruning loads as it is, on any transformers, with no method at all.

FFNs are found by their parts: BERT, RoBERTa, ELECTRA and MobileBERT (`intermediate.dense`
beside `output.dense`, MobileBERT's stacked FFNs too), ALBERT (`ffn`, `ffn_output`) and
DistilBERT (`lin1`, `lin2`).
"""
from agents.layers import sliced_linear
from agents.methods import MethodError, fraction_parameter

NAME = "prune_ffn"
SUMMARY = "remove the fraction F of each layer's FFN neurons (smallest L1 norm)"
CUDA = True
INT8 = True
STREAM = True
FIELDS = (("neurons_pruned", "int", "neurons", "FFN intermediate neurons removed, over all "
                                                "layers"),)
_WIDTHS = ("intermediate_size", "hidden_dim")  # the config's FFN width, by family


def parameters(value):
    return fraction_parameter(value, NAME, "each layer's FFN neurons")


def cost(params):
    return 1.0 - 2.0 * params["fraction"] / 3.0  # the FFN is about two thirds of a layer's work


def apply(model, params):
    from agents.layers import layer_list

    pairs = ffn_pairs(layer_list(model)[1])
    if not pairs:
        raise MethodError("%s has no feed-forward network prune_ffn knows" % model.config.model_type,
                          "use prune_ffn on BERT, RoBERTa, ELECTRA, MobileBERT, ALBERT or "
                          "DistilBERT")
    removed, kept = 0, set()
    for (up_owner, up_attr), (down_owner, down_attr) in pairs:
        up, down = getattr(up_owner, up_attr), getattr(down_owner, down_attr)
        width = up.weight.shape[0]
        count = min(width - 1, int(params["fraction"] * width + 0.5))
        if count < 1:
            raise MethodError("prune_ffn %s removes no neuron of a %d-neuron FFN"
                              % (params["fraction"], width), "use a larger fraction")
        index = strongest(up, down, width - count)
        setattr(up_owner, up_attr, sliced_linear(up, index, 0))
        setattr(down_owner, down_attr, sliced_linear(down, index, 1))
        removed += count
        kept.add(width - count)
    if len(kept) == 1:  # always, unless layers came with different widths
        for name in _WIDTHS:
            if isinstance(getattr(model.config, name, None), int):
                setattr(model.config, name, kept.pop())
                break
    return {"neurons_pruned": removed}


def strongest(up, down, keep):
    """Indices (in order) of the `keep` neurons with the largest L1 norm of their weights: the
    first Linear's row and the second's column."""
    import torch

    norms = up.weight.detach().abs().sum(1) + down.weight.detach().abs().sum(0)
    order = sorted(range(norms.shape[0]), key=lambda i: (-float(norms[i]), i))
    return torch.tensor(sorted(order[:keep]), dtype=torch.long)


def ffn_pairs(layers):
    """((owner, attr) of the first Linear, (owner, attr) of the second) of every FFN in the
    layers, each once (ALBERT shares its layers)."""
    import torch

    pairs, seen = [], set()
    for layer in layers:
        for _, module in layer.named_modules():
            for up, down in _parts(module):
                first, second = getattr(*up), getattr(*down)
                if id(first) in seen:
                    continue
                if not (isinstance(first, torch.nn.Linear) and isinstance(second,
                                                                          torch.nn.Linear)):
                    raise MethodError("the FFN's Linears were replaced by an earlier method",
                                      "write prune_ffn before methods that factorize Linears")
                if first.weight.shape[0] != second.weight.shape[1]:
                    continue
                seen.add(id(first))
                pairs.append((up, down))
    return pairs


def _parts(module):
    """The FFN inside `module` itself, as ((owner, attr), (owner, attr)), if it has one."""
    intermediate, output = getattr(module, "intermediate", None), getattr(module, "output", None)
    if hasattr(intermediate, "dense") and hasattr(output, "dense"):
        return [((intermediate, "dense"), (output, "dense"))]
    for up, down in (("lin1", "lin2"), ("ffn", "ffn_output")):
        if hasattr(module, up) and hasattr(module, down) \
                and hasattr(getattr(module, up), "weight"):
            return [((module, up), (module, down))]
    return []

