"""low_rank: {rank: R} -- every encoder Linear replaced by two, from its truncated SVD.

A Linear of weight W (out x in) becomes Linear(in -> r, no bias) then Linear(r -> out, W's
bias), whose weights are sqrt(S_r) V_r^T and U_r sqrt(S_r): the best rank-r approximation of W
in Frobenius norm (Eckart-Young), with r(in + out) weights instead of in x out. R is a rank, or
a fraction of min(out, in) (rank: 0.25). A layer whose pair would hold as many weights as it or
more stays dense; the result says how many were factorized, and the mean relative error
||W - W'||_F / ||W||_F over them, measured on the float32 factors the model computes with.

Every Linear inside the encoder's layers counts: Q, K, V, the attention output, the FFN's two
(and MobileBERT's bottlenecks); embeddings, pooler and classifier stay as they are.
"""
from agents.methods import MethodError

NAME = "low_rank"
SUMMARY = "replace every encoder Linear by two of rank R (truncated SVD)"
CUDA = True
INT8 = True
STREAM = True
# The figures of every method that factorizes the encoder's Linears (kronecker's too)
FACTOR_FIELDS = (
    ("factorized_layers", "int", "layers", "encoder Linears replaced by factors"),
    ("reconstruction_error", "float", "", "mean relative error ||W - W'||_F / ||W||_F over the "
                                          "factorized layers"),
    ("layer_errors", "text", "", "each factorized Linear's relative error, in the model's order "
                                 "(JSON)"),
)
FIELDS = FACTOR_FIELDS
SHOWN = ("factorized_layers", "reconstruction_error")


def parameters(value):
    if not isinstance(value, dict) or set(value) != {"rank"}:
        raise MethodError("low_rank takes {rank: R}, not %r" % (value,),
                          "write low_rank: {rank: 128} (a rank) or {rank: 0.25} (a fraction "
                          "of each matrix's smaller side)")
    rank = value["rank"]
    if isinstance(rank, bool) or not isinstance(rank, (int, float)):
        raise MethodError("rank is %r, not a number" % (rank,),
                          "write a whole rank (rank: 128) or a fraction (rank: 0.25)", ("rank",))
    if isinstance(rank, int) and rank < 1:
        raise MethodError("rank is %d" % rank, "write a rank of at least 1, or a fraction "
                          "between 0 and 1", ("rank",))
    if isinstance(rank, float) and not 0 < rank < 1:
        raise MethodError("rank is %r: a fraction must be above 0 and below 1" % rank,
                          "write a fraction such as 0.25, or a whole rank such as 128",
                          ("rank",))
    return {"rank": rank}


def rank_for(params, rows, columns):
    """The rank a weight of rows x columns is factorized at."""
    rank = params["rank"]
    if isinstance(rank, float):
        return max(1, int(rank * min(rows, columns) + 0.5))
    return rank


def saves(rank, rows, columns):
    """Whether the pair holds fewer weights than the dense matrix."""
    return rank * (rows + columns) < rows * columns


def cost(params):
    rank = params["rank"]
    return min(1.0, 2.0 * rank) if isinstance(rank, float) else 1.0


def apply(model, params):
    import json

    from agents.layers import encoder_linears

    errors = []
    for owner, attr, linear in encoder_linears(model):
        rows, columns = linear.weight.shape
        rank = rank_for(params, rows, columns)
        if not saves(rank, rows, columns):
            continue
        pair, error = factorize(linear, rank)
        setattr(owner, attr, pair)
        errors.append(error)
    return {"factorized_layers": len(errors),
            "reconstruction_error": sum(errors) / len(errors) if errors else None,
            "layer_errors": json.dumps([round(e, 6) for e in errors])}


def factorize(linear, rank):
    """(Sequential(Linear in->rank, Linear rank->out), the pair's relative Frobenius error)."""
    import torch

    weight = linear.weight.detach()
    # float32's SVD is twice as fast as float64's; the error below is measured, in float64,
    # on the factors as the model will hold them, so it says what the model computes with.
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    root = torch.sqrt(s[:rank])
    first = torch.nn.Linear(weight.shape[1], rank, bias=False)
    second = torch.nn.Linear(rank, weight.shape[0], bias=linear.bias is not None)
    first.weight = torch.nn.Parameter((root[:, None] * vh[:rank]).float().contiguous(),
                                      requires_grad=False)
    second.weight = torch.nn.Parameter((u[:, :rank] * root[None, :]).float().contiguous(),
                                       requires_grad=False)
    if linear.bias is not None:
        second.bias = torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    approximation = second.weight.double() @ first.weight.double()
    error = float(torch.linalg.norm(weight.double() - approximation)
                  / torch.linalg.norm(weight.double()))
    return torch.nn.Sequential(first, second), error


def fit_template(layer, tensors):
    """An empty streamed layer about to hold a stored one: where the store holds a pair
    (`X.0`, `X.1`), the template's Linear X becomes an empty pair (the tensors fill it)."""
    import torch

    names = set(e["name"] for e in tensors)
    modules = dict(layer.named_modules())
    for name, module in list(modules.items()):
        if isinstance(module, torch.nn.Sequential) or not name:
            continue
        first = [n for n in (name + ".0", name + ".0.weight", name + ".0.values") if n in names]
        if not first:
            continue
        bias = (name + ".1.bias") in names or any(
            e["name"] == name + ".1" and e.get("bias") is not None for e in tensors)
        owner_path, _, attr = name.rpartition(".")
        owner = modules[owner_path] if owner_path else layer
        setattr(owner, attr, torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False),
                                                 torch.nn.Linear(1, 1, bias=bias)))

