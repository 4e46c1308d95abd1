"""prune_heads: F -- structured pruning of attention heads.

In every attention module of the encoder, the fraction F of its heads (rounded to the nearest
whole head, at least one kept) whose slice of the output projection has the smallest L1 norm
is removed: the rows of Q, K and V and the columns of the output projection that belong to those
heads go, so all four matrices shrink; the output projection's bias stays. The model's config
records them in `pruned_heads` ({layer: [head, ...]}, transformers' own format), so a checkpoint
saved after pruning loads as it is, with no prune_heads in its variant (restore()).

transformers 5 has no prune_heads of its own any more, and 4.18 (the Jetson's) has one per
family; this one finds attention by its parts, the same way on both: BERT, RoBERTa, ELECTRA and
MobileBERT (`query`, `key`, `value`, and the sibling `output.dense`), ALBERT (`query`, `key`,
`value`, `dense`) and DistilBERT (`q_lin`, `k_lin`, `v_lin`, `out_lin`).
"""
from agents.layers import sliced_linear
from agents.methods import MethodError, fraction_parameter

NAME = "prune_heads"
SUMMARY = "remove the fraction F of each layer's attention heads (smallest output-projection L1)"
CUDA = True
INT8 = True
STREAM = True
FIELDS = (("heads_pruned", "int", "heads", "attention heads removed, over all layers"),)

_PARTS = (("query", "key", "value", None), ("q_lin", "k_lin", "v_lin", "out_lin"))
_HEAD_COUNTS = ("num_attention_heads", "n_heads")


def parameters(value):
    return fraction_parameter(value, NAME, "each layer's heads")


def cost(params):
    return 1.0 - params["fraction"] / 3.0  # attention is about a third of a layer's matmuls


def apply(model, params):
    from agents.layers import layer_list

    _, layers = layer_list(model)
    blocks = attention_blocks(layers)
    if not blocks:
        raise MethodError("%s has no attention heads to prune" % model.config.model_type,
                          "use prune_heads on a model with attention (FNet mixes with Fourier "
                          "transforms)")
    if not all(block.linear() for block in blocks):
        raise MethodError("the attention's Linears were replaced by an earlier method",
                          "write prune_heads before methods that factorize Linears or hold "
                          "them sparse")
    before = getattr(model.config, "pruned_heads", None) or {}
    before = dict((int(k), v) for k, v in before.items())
    removed, record = 0, {}
    for index, block in enumerate(blocks):
        if before.get(index):  # a pruned checkpoint: its heads keep their original numbers
            gone = set(int(h) for h in before[index])
            block.kept = [h for h in range(block.heads() + len(gone)) if h not in gone]
        heads = block.heads()
        count = min(heads - 1, int(params["fraction"] * heads + 0.5))
        if count < 1:
            raise MethodError("prune_heads %s removes no head of a %d-head layer"
                              % (params["fraction"], heads), "use a larger fraction")
        weakest = block.weakest(count)
        record[index] = sorted(block.original(weakest))
        block.prune(weakest)
        removed += count
    model.config.pruned_heads = _merged(getattr(model.config, "pruned_heads", None), record)
    return {"heads_pruned": removed}


def restores(config):
    """A checkpoint saved after pruning, on a transformers that no longer prunes by itself
    (4.x builds such a model from its config's pruned_heads; 5.x ignores them)."""
    from transformers import PreTrainedModel

    return bool(getattr(config, "pruned_heads", None)) and not hasattr(PreTrainedModel,
                                                                       "prune_heads")


def restore(model, config):
    """Shape a model freshly built from a pruned checkpoint's config like the checkpoint."""
    from agents.layers import layer_list

    blocks = attention_blocks(layer_list(model)[1])
    for layer, heads in config.pruned_heads.items():
        blocks[int(layer)].prune(sorted(int(h) for h in heads))


def fit_template(layer, tensors):
    """An empty streamed layer about to hold a stored one: its head counts follow the width of
    the stored queries (the tensors replace the weights themselves)."""
    weights = {}
    for entry in tensors:
        if entry["kind"] == "qlinear":
            weights[entry["name"]] = entry["weight"]["shape"]
        elif entry["name"].endswith(".weight"):
            weights[entry["name"][:-len(".weight")]] = entry["shape"]
        elif entry["name"].endswith(".crow_indices"):  # a CSR weight (magnitude): its rows
            weights[entry["name"][:-len(".crow_indices")]] = [entry["shape"][0] - 1]
    for block in attention_blocks([layer]):
        # The query projection, or the last Linear of what a method made of it (a low-rank pair)
        inside = sorted(n for n in weights if n == block.query_name
                        or n.startswith(block.query_name + "."))
        if inside:
            block.set_heads(weights[inside[-1]][0] // block.head_size)


def _merged(before, record):
    merged = dict((int(k), list(v)) for k, v in (before or {}).items())
    for layer, heads in record.items():
        merged[layer] = sorted(set(merged.get(layer, [])) | set(heads))
    return merged


class _Block(object):
    """One attention module: its Q, K, V and output projections and its head count."""

    def __init__(self, holder, parts, output, path):
        self.holder, self.parts, self.output = holder, parts, output  # output: (owner, attr)
        self.query_name = (path + "." if path else "") + parts[0]
        self.count_attr = next(a for a in _HEAD_COUNTS if hasattr(holder, a))
        if isinstance(getattr(holder, "attention_head_size", None), int):
            self.head_size = holder.attention_head_size
        elif isinstance(getattr(holder, "dim", None), int):  # DistilBERT on transformers 4
            self.head_size = holder.dim // self.heads()
        else:
            self.head_size = getattr(holder, parts[0]).weight.shape[0] // self.heads()
        self.kept = list(range(self.heads()))  # original indices of the heads still here

    def heads(self):
        return int(getattr(self.holder, self.count_attr))

    def linear(self):
        """Whether Q, K, V and the output projection are plain Linears (prunable)."""
        import torch

        owner, attr = self.output
        parts = [getattr(self.holder, p) for p in self.parts[:3]] + [getattr(owner, attr)]
        return all(isinstance(m, torch.nn.Linear) for m in parts)

    def original(self, heads):
        return [self.kept[h] for h in heads]

    def weakest(self, count):
        """The `count` heads whose output-projection columns have the smallest L1 norm."""
        import torch

        owner, attr = self.output
        weight = getattr(owner, attr).weight.detach()
        size = self.head_size
        norms = [float(torch.sum(torch.abs(weight[:, h * size:(h + 1) * size])))
                 for h in range(self.heads())]
        return sorted(sorted(range(len(norms)), key=lambda h: (norms[h], h))[:count])

    def prune(self, heads):
        """Remove these heads (indices among those still here)."""
        import torch

        if not heads:
            return
        gone = set(heads)
        keep = [h for h in range(self.heads()) if h not in gone]
        index = torch.tensor([h * self.head_size + i for h in keep for i in range(self.head_size)],
                             dtype=torch.long)
        for name in self.parts[:3]:
            setattr(self.holder, name, sliced_linear(getattr(self.holder, name), index, 0))
        owner, attr = self.output
        setattr(owner, attr, sliced_linear(getattr(owner, attr), index, 1))
        if isinstance(getattr(self.holder, "pruned_heads", None), set):
            self.holder.pruned_heads |= set(self.original(heads))
        self.kept = [self.kept[h] for h in keep]
        self.set_heads(len(keep))

    def set_heads(self, heads):
        setattr(self.holder, self.count_attr, heads)
        for attr in ("all_head_size", "dim"):  # what each family's forward reshapes by
            if isinstance(getattr(self.holder, attr, None), int):
                setattr(self.holder, attr, heads * self.head_size)


def attention_blocks(layers):
    """Every attention module inside `layers` (an iterable of encoder layers), in order."""
    blocks = []
    for layer in layers:
        named = dict(layer.named_modules())
        for path, module in layer.named_modules():
            for parts in _PARTS:
                if not all(hasattr(module, p) for p in parts[:3]):
                    continue
                if not any(hasattr(module, a) for a in _HEAD_COUNTS):
                    continue
                blocks.append(_Block(module, parts, _output(module, parts, path, named), path))
    return blocks


def _output(module, parts, path, named):
    """(owner, attribute) of the projection after the heads."""
    if parts[3] is not None:
        return module, parts[3]
    if hasattr(module, "dense"):  # ALBERT: one module holds all four
        return module, "dense"
    parent = named.get(path.rpartition(".")[0])
    output = getattr(parent, "output", None)
    if output is None or not hasattr(output, "dense"):
        raise MethodError("cannot find the output projection of the attention at %s" % path,
                          "prune_heads knows BERT-like, ALBERT and DistilBERT attention")
    return output, "dense"

