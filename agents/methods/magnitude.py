"""magnitude: {sparsity: S} -- one-shot magnitude pruning (the lottery ticket's mask).

The share S of the weights of every Linear inside the encoder's layers (Q, K, V, the attention
output, the FFN's two; biases, LayerNorms, embeddings, pooler and classifier stay) is set to
zero: those of the smallest |w|. scope: global (the default) takes exactly round(S x N) of all
N such weights together, under one threshold, so layers whose weights are smaller lose more of
them; scope: layer takes round(S x n) of each Linear's own n. Weights equal to the threshold are
taken in the order of the layers, row by row, until the count is reached. {mask: checkpoint}
prunes nothing: the weights are already zero in the checkpoint (a lottery ticket trained and
masked elsewhere). Either way the result reports the sparsity achieved, measured on the weights
afterwards (zeros / weights), not the one asked for.

kernel: dense (the default) keeps the zeros in the dense weights: the model computes with the
same dense kernels, so its FLOPs, time and stored parameters are the dense model's (fewer of
them nonzero). Magnitude pruning saves nothing unless something skips the zeros: kernel: sparse
replaces each pruned Linear by a SparseLinear holding its nonzeros in CSR form and computing
with torch's sparse CSR matmul, whose FLOPs are 2 per stored weight and input row. Where this
torch has no CPU CSR matmul the weights stay dense, and the result's kernel says so and why.
The sparse kernel runs fp32 weights: int8 (dynamic quantization of nn.Linear only) and fp16
have no sparse kernel, and are refused with it.
"""
from functools import lru_cache

from agents.methods import MethodError
from agents.spelling import with_guess

NAME = "magnitude"
SUMMARY = "zero the share S of the encoder Linears' smallest weights (one-shot magnitude mask)"
CUDA = True
INT8 = True
STREAM = True
FIELDS = (
    ("sparsity", "float", "", "share of the encoder Linears' weights that are zero, achieved"),
    ("kernel", "text", "", "what computes with the masked weights; dense: the masked weights run "
                           "dense kernels, the same FLOPs and time as the dense model; "
                           "sparse_csr: torch's sparse CSR matmul"),
)
SHOWN = ("sparsity", "kernel")

SCOPES = ("global", "layer")
KERNELS = ("dense", "sparse")
SPARSE = "sparse_csr"
_FORMS = "write magnitude: {sparsity: 0.9} (scope: global | layer, kernel: dense | sparse), " \
         "or {mask: checkpoint}"
# A CSR matmul spends about 4 times a dense GEMM's time per stored weight (a 90% sparse
# 768 x 3072 Linear at seq 128 takes about half the dense time here): for the queue's order only.
_CSR_WORK = 4.0


def parameters(value):
    if not isinstance(value, dict):
        raise MethodError("magnitude takes {sparsity: S} or {mask: checkpoint}, not %r"
                          % (value,), _FORMS)
    known = ("sparsity", "scope", "kernel", "mask")
    unknown = sorted(set(value) - set(known), key=str)
    if unknown:
        raise MethodError("magnitude has no parameter %r" % (unknown[0],),
                          with_guess(unknown[0], known, _FORMS), (unknown[0],))
    kernel = value.get("kernel", "dense")
    if kernel not in KERNELS:
        raise MethodError("kernel is %r" % (kernel,), "write kernel: dense (zeros in dense "
                          "weights) or kernel: sparse (CSR weights)", ("kernel",))
    if "mask" in value:
        if value["mask"] != "checkpoint":
            raise MethodError("mask is %r" % (value["mask"],), "write mask: checkpoint (the "
                              "weights are zero in the checkpoint already)", ("mask",))
        for extra in ("sparsity", "scope"):
            if extra in value:
                raise MethodError("mask: checkpoint prunes nothing, and takes no %s" % extra,
                                  "drop %s, or drop mask to prune here" % extra, (extra,))
        return {"mask": "checkpoint", "kernel": kernel}
    if "sparsity" not in value:
        raise MethodError("magnitude needs a sparsity (or mask: checkpoint)", _FORMS,
                          ("sparsity",))
    sparsity = value["sparsity"]
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) \
            or not 0 < sparsity < 1:
        raise MethodError("sparsity is %r, not a share above 0 and below 1" % (sparsity,),
                          "write the share of weights to zero, e.g. sparsity: 0.9",
                          ("sparsity",))
    scope = value.get("scope", "global")
    if scope not in SCOPES:
        raise MethodError("scope is %r" % (scope,), "write scope: global (one threshold over "
                          "all encoder Linears) or scope: layer (each its own)", ("scope",))
    return {"sparsity": float(sparsity), "scope": scope, "kernel": kernel}


def check(params, variant):
    """The sparse kernel runs fp32 CSR weights on torch's sparse matmul: no int8, no fp16."""
    if params["kernel"] != "sparse":
        return
    if variant.precision == "int8":
        raise MethodError("kernel: sparse runs fp32 CSR weights; int8 has no sparse kernel",
                          "drop precision: int8, or use kernel: dense", ("kernel",))
    if variant.precision == "fp16":
        raise MethodError("kernel: sparse runs fp32 CSR weights on the CPU; fp16 runs on CUDA",
                          "drop precision: fp16, or use kernel: dense", ("kernel",))


def cost(params):
    if params["kernel"] != "sparse":
        return 1.0
    density = 1.0 - params.get("sparsity", 0.0)  # mask: checkpoint: not known before it runs
    return min(1.0, 0.05 + _CSR_WORK * density)


def apply(model, params):
    import torch

    from agents.layers import encoder_linears

    found = encoder_linears(model)
    if not found:
        raise MethodError("%s has no Linear in its encoder layers" % model.config.model_type,
                          "use magnitude on a model whose layers compute with Linears")
    weights = [linear.weight for _, _, linear in found]
    with torch.no_grad():
        if "sparsity" in params:
            if params["scope"] == "global":
                prune(weights, params["sparsity"])
            else:
                for weight in weights:
                    prune([weight], params["sparsity"])
        zeros = sum(int(w.numel() - torch.count_nonzero(w)) for w in weights)
    sparsity = zeros / float(sum(w.numel() for w in weights))
    if params["kernel"] != "sparse":
        return {"sparsity": sparsity, "kernel": "dense"}
    problem = csr_problem()
    if problem is not None:
        return {"sparsity": sparsity, "kernel": "dense (%s)" % problem}
    sparse_linear = sparse_linear_class()
    for owner, attr, linear in found:
        owner._modules[attr] = sparse_linear.from_linear(linear)
    return {"sparsity": sparsity, "kernel": SPARSE}


def prune(weights, sparsity):
    """Zero exactly round(sparsity x N) of these tensors' N entries, those of the smallest |w|,
    in place, under one threshold; entries equal to it are taken in order (tensor by tensor,
    row-major) until the count is reached."""
    import torch

    total = sum(w.numel() for w in weights)
    count = int(round(sparsity * total))
    if count < 1:
        return
    with torch.no_grad():
        _zero_smallest(weights, count)


def _zero_smallest(weights, count):
    import torch

    # One temporary copy of all the magnitudes (bert-base: 85M weights, 340 MB) for the threshold.
    magnitudes = torch.cat([w.detach().abs().reshape(-1) for w in weights])
    threshold = magnitudes.kthvalue(count).values.item()
    del magnitudes
    below = sum(int((w.abs() < threshold).sum()) for w in weights)
    ties = count - below  # entries equal to the threshold still to take (at least one)
    for weight in weights:
        magnitude = weight.abs()
        if ties > 0:
            equal = (magnitude == threshold).reshape(-1).nonzero().reshape(-1)[:ties]
            ties -= equal.numel()
        else:
            equal = None
        weight.masked_fill_(magnitude < threshold, 0.0)
        if equal is not None and equal.numel():
            weight.view(-1)[equal] = 0.0


@lru_cache(maxsize=None)  # once per process
def csr_problem():
    """Why this torch cannot run a CSR weight on the CPU (None: it can): a tiny matmul is tried
    the way SparseLinear computes."""
    import torch

    problem = None
    if not hasattr(torch, "sparse_csr_tensor"):
        problem = "torch %s has no sparse CSR tensors" % torch.__version__
    else:
        try:
            matrix = _csr(torch.tensor([0, 1, 2], dtype=torch.int32),
                          torch.tensor([1, 0], dtype=torch.int32),
                          torch.tensor([2.0, 3.0]), (2, 2))
            product = torch.addmm(torch.ones(2, 1), matrix, torch.eye(2))
            if not torch.equal(product, torch.tensor([[1.0, 3.0], [4.0, 1.0]])):
                problem = "torch %s's CPU sparse CSR matmul is wrong" % torch.__version__
        except Exception:  # any refusal of this torch: then it has none to measure
            problem = "torch %s has no CPU sparse CSR matmul" % torch.__version__
    return problem


_warned = []


def _csr(crow, col, values, size):
    """torch's CSR matrix over these tensors (no copy). torch warns once per process that CSR
    is in beta (and, on 2.x, that it checks no invariants): not the result's business."""
    import torch

    if _warned:
        return torch.sparse_csr_tensor(crow, col, values, size)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        matrix = torch.sparse_csr_tensor(crow, col, values, size)
    _warned.append(True)
    return matrix


@lru_cache(maxsize=None)
def sparse_linear_class():
    """The SparseLinear module class (made on first use: torch is imported lazily)."""
    import torch

    class SparseLinear(torch.nn.Module):
        """y = x W^T + b with W in CSR form: `values` (the nonzeros, a parameter), buffers
        `crow_indices`, `col_indices` (int32) and `size` ([out, in], int64)."""

        def __init__(self, bias=True, streamed=False):
            super(SparseLinear, self).__init__()
            self.values = torch.nn.Parameter(torch.empty(0), requires_grad=False)
            self.register_buffer("crow_indices", torch.zeros(1, dtype=torch.int32))
            self.register_buffer("col_indices", torch.empty(0, dtype=torch.int32))
            self.register_buffer("size", torch.zeros(2, dtype=torch.int64))
            self.register_parameter("bias", torch.nn.Parameter(torch.empty(0), requires_grad=False)
                                    if bias else None)
            # A streamed layer's tensors are mapped from its file and swapped every pass: a
            # matrix cached over them would keep the mapping of the layer before alive.
            self.streamed = streamed
            self._cached = None  # (crow, col, values, matrix)

        @classmethod
        def from_linear(cls, linear):
            weight = linear.weight.detach()
            rows, columns = weight.shape
            module = cls(bias=linear.bias is not None)
            where = weight.nonzero()  # row-major: the CSR order
            per_row = torch.bincount(where[:, 0], minlength=rows)
            crow = torch.zeros(rows + 1, dtype=torch.int64)
            crow[1:] = torch.cumsum(per_row, 0)
            module.values = torch.nn.Parameter(weight[where[:, 0], where[:, 1]].contiguous(),
                                               requires_grad=False)
            module.crow_indices = crow.to(torch.int32)
            module.col_indices = where[:, 1].to(torch.int32).contiguous()
            module.size = torch.tensor([rows, columns], dtype=torch.int64)
            if linear.bias is not None:
                module.bias = torch.nn.Parameter(linear.bias.detach().clone(),
                                                 requires_grad=False)
            return module

        @property
        def in_features(self):
            return int(self.size[1])

        @property
        def out_features(self):
            return int(self.size[0])

        def matrix(self):
            """The CSR weight over the tensors held now (cached while they are the same)."""
            cached = self._cached
            if cached is not None and cached[0] is self.crow_indices \
                    and cached[1] is self.col_indices and cached[2] is self.values:
                return cached[3]
            out_features, in_features = (int(v) for v in self.size.tolist())
            matrix = _csr(self.crow_indices, self.col_indices, self.values.detach(),
                          (out_features, in_features))
            if not self.streamed:
                self._cached = (self.crow_indices, self.col_indices, self.values, matrix)
            return matrix

        def forward(self, x):
            weight = self.matrix()
            out_features, in_features = weight.shape
            rows = x.reshape(-1, in_features).t().contiguous()  # (in, rows): what CSR @ takes
            if self.bias is not None:
                y = torch.addmm(self.bias.unsqueeze(1), weight, rows)
            else:
                y = torch.mm(weight, rows)
            return y.t().contiguous().reshape(tuple(x.shape[:-1]) + (out_features,))

        def farm_flops(self, x):
            """One multiply-add per stored weight and input row."""
            return 2 * self.values.numel() * (x.numel() // self.in_features)

        def extra_repr(self):
            return "in_features=%d, out_features=%d, nnz=%d, bias=%s" % (
                self.in_features, self.out_features, self.values.numel(),
                self.bias is not None)

    return SparseLinear


def fit_template(layer, tensors):
    """An empty streamed layer about to hold a stored one: where the store holds a CSR weight
    (`X.values`), the template's module X becomes an empty SparseLinear (the tensors fill it).
    A no-op for layers stored with no CSR weight."""
    names = set(e["name"] for e in tensors)
    paths = [n[:-len(".values")] for n in sorted(names) if n.endswith(".values")
             and n[:-len(".values")] + ".crow_indices" in names]
    if not paths:
        return
    import torch
    from agents.layers import StoreError

    sparse_linear = sparse_linear_class()
    modules = dict(layer.named_modules())
    for path in paths:
        owner_path, _, attr = path.rpartition(".")
        owner = modules.get(owner_path) if owner_path else layer
        if owner is None or isinstance(owner, (torch.nn.Linear, sparse_linear)):
            # e.g. a low-rank pair's half (X.0) where the template still has X as one Linear:
            # filled, it would compute with the template's own weights, not the store's
            raise StoreError("the store holds a CSR weight at %s, and the template layer has "
                             "no module there to hold it (another method's fit_template did not "
                             "shape %s)" % (path, owner_path))
        bias = (path + ".bias") in names
        present = owner._modules.get(attr)
        if isinstance(present, sparse_linear) and present.streamed \
                and (present.bias is not None) == bias:
            continue  # shaped for an earlier unit: the tensors replace its own
        owner._modules[attr] = sparse_linear(bias=bias, streamed=True)

