"""kronecker: {shape: [m1, n1]} or {factor: K}, optionally terms: r -- every encoder Linear
replaced by the nearest sum of r Kronecker products, run without ever forming the matrix.

A weight W (m x n) becomes A_1 (x) B_1 + ... + A_r (x) B_r, each A m1 x n1 and each B
m/m1 x n/n1: the nearest such sum in Frobenius norm (Van Loan and Pitsianis, 1993). Rearranged so
that each row is one m2 x n2 block of W read row by row, W is a (m1 n1) x (m2 n2) matrix R, and
A_k (x) B_k is a rank-1 term of R: the best r terms are R's rank-r SVD, and the relative error
is that of the discarded singular values (measured here, in float64, on the float32 factors the
model computes with; the result keeps each layer's and their mean).

The product is computed as (A (x) B) x = vec(A X B^T), X the n1 x n2 reshape of x (row by
row), in two small matmuls: either X B^T first (2 r n1 n2 m2 FLOPs) then A on its
result (2 r m2 n1 m1), or A first then B (2 r n1 n2 m1 + 2 r m1 n2 m2), whichever costs fewer;
instead of 2 m n. Both are torch Linears (the stacked B_k, the side-by-side A_k), so torch's
dynamic quantization makes them int8, a layer store streams them, and torch's FLOP counter
counts them; the reshapes between them are copies the measured time includes.

`shape: [m1, n1]` is A's shape for every Linear whose sides it divides; `factor: K` picks, for
each weight shape, the A shape whose factors hold the number of weights closest to 1/K of the
matrix's (the bias, kept whole, aside). A Linear the shape does not divide, or whose factors
would hold as many weights as it, stays dense; the result says how many were replaced.
"""
import json
from functools import lru_cache

from agents.methods import MethodError
from agents.methods.low_rank import FACTOR_FIELDS

NAME = "kronecker"
SUMMARY = "replace every encoder Linear by the nearest sum of Kronecker products (Van Loan)"
CUDA = True
INT8 = True
STREAM = True
FIELDS = FACTOR_FIELDS + (
    ("kronecker_shapes", "text", "", "A's shape for each weight shape: {\"m x n\": \"m1 x n1\"} "
                                     "(JSON)"),
)
SHOWN = ("factorized_layers", "reconstruction_error")
_USE = "write kronecker: {shape: [m1, n1]} (A's shape) or {factor: K} (K times fewer weights), " \
       "and terms: r for a sum of r products"


def _whole(value):
    return isinstance(value, int) and not isinstance(value, bool)


def parameters(value):
    if not isinstance(value, dict) or len({"shape", "factor"} & set(value)) != 1 \
            or set(value) - {"shape", "factor", "terms"}:
        raise MethodError("kronecker takes {shape: [m1, n1]} or {factor: K}, not %r" % (value,),
                          _USE)
    terms = value.get("terms", 1)
    if not _whole(terms) or terms < 1:
        raise MethodError("terms is %r" % (terms,), "write a whole number of Kronecker products "
                          "of at least 1 (terms: 1 is the nearest single product)", ("terms",))
    if "shape" in value:
        shape = value["shape"]
        if not isinstance(shape, list) or len(shape) != 2 or not all(
                _whole(s) and s >= 1 for s in shape):
            raise MethodError("shape is %r, not [m1, n1]" % (shape,),
                              "write A's rows and columns, e.g. shape: [32, 32] (each must "
                              "divide the weights' sides)", ("shape",))
        return {"shape": [int(s) for s in shape], "terms": int(terms)}
    factor = value["factor"]
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 1:
        raise MethodError("factor is %r" % (factor,), "write how many times fewer weights, "
                          "above 1 (factor: 20)", ("factor",))
    return {"factor": factor, "terms": int(terms)}


def cost(params):
    return 0.5  # a guess for the queue's order: a few times less work, some copies


# -- choosing the factors' shapes --------------------------------------------------------------
def weights(m1, n1, rows, columns, terms):
    """Weights the r products hold in place of a rows x columns matrix."""
    return terms * (m1 * n1 + (rows // m1) * (columns // n1))


def flops(m1, n1, rows, columns, terms):
    """(FLOPs of one input vector, whether A goes first) in the cheaper of the two orders."""
    m2, n2 = rows // m1, columns // n1
    b_first = 2 * terms * (n1 * n2 * m2 + m2 * n1 * m1)
    a_first = 2 * terms * (n1 * n2 * m1 + m1 * n2 * m2)
    return (a_first, True) if a_first < b_first else (b_first, False)


def _divisors(number):
    return [d for d in range(1, number + 1) if number % d == 0]


def factor_shape(params, rows, columns):
    """A's shape (m1, n1) for a rows x columns weight, or None where it stays dense."""
    terms = params["terms"]
    if "shape" in params:
        m1, n1 = params["shape"]
        if rows % m1 or columns % n1:
            return None
        candidates = [(m1, n1)]
    else:
        target = rows * columns / float(params["factor"])
        candidates = sorted(
            ((m1, n1) for m1 in _divisors(rows) for n1 in _divisors(columns)),
            key=lambda s: (abs(weights(s[0], s[1], rows, columns, terms) - target),
                           flops(s[0], s[1], rows, columns, terms)[0], s))[:1]
    m1, n1 = candidates[0]
    if weights(m1, n1, rows, columns, terms) >= rows * columns:
        return None
    return m1, n1


# -- the method --------------------------------------------------------------------------------
def apply(model, params):
    from agents.layers import encoder_linears

    errors, shapes = [], {}
    for owner, attr, linear in encoder_linears(model):
        rows, columns = linear.weight.shape
        shape = factor_shape(params, rows, columns)
        if shape is None:
            continue
        module, error = factorize(linear, shape[0], shape[1], params["terms"])
        setattr(owner, attr, module)
        errors.append(error)
        shapes["%dx%d" % (rows, columns)] = "%dx%d" % shape
    if not errors and "shape" in params:
        raise MethodError("kronecker shape %s divides no encoder Linear of this model (or saves "
                          "no weights in any)" % (params["shape"],),
                          "use a shape whose sides divide the weights' (e.g. [32, 32] for "
                          "768 x 3072) or factor: K")
    return {"factorized_layers": len(errors),
            "reconstruction_error": sum(errors) / len(errors) if errors else None,
            "layer_errors": json.dumps([round(e, 6) for e in errors]),
            "kronecker_shapes": json.dumps(shapes, sort_keys=True)}


def rearranged(weight, m1, n1):
    """W (m1 m2 x n1 n2) as R (m1 n1 x m2 n2): row i1 n1 + j1 is block (i1, j1) of W read row by
    row, so that A (x) B = vec(A) vec(B)^T (Van Loan-Pitsianis)."""
    rows, columns = weight.shape
    m2, n2 = rows // m1, columns // n1
    return weight.reshape(m1, m2, n1, n2).permute(0, 2, 1, 3).reshape(m1 * n1, m2 * n2)


def factorize(linear, m1, n1, terms):
    """(the KroneckerLinear nearest to the Linear, its relative Frobenius error)."""
    import torch

    weight = linear.weight.detach().float()
    rows, columns = weight.shape
    m2, n2 = rows // m1, columns // n1
    matrix = rearranged(weight, m1, n1)
    terms = min(terms, min(matrix.shape))
    u, s, v = top_singular(matrix, terms)
    root = torch.sqrt(s)
    a = (u * root[None, :]).t().reshape(terms, m1, n1).float()
    b = (v * root[None, :]).t().reshape(terms, m2, n2).float()
    module = kronecker_linear(m1, n1, m2, n2, terms, flops(m1, n1, rows, columns, terms)[1],
                              linear.bias is not None)
    module.set_factors(a, b, None if linear.bias is None else linear.bias.detach())
    approximation = sum(torch.outer(a[k].reshape(-1).double(), b[k].reshape(-1).double())
                        for k in range(terms))
    error = float(torch.linalg.norm(matrix.double() - approximation)
                  / torch.linalg.norm(matrix.double()))
    return module, error


def top_singular(matrix, terms):
    """(u, s, v) of the matrix's `terms` largest singular triplets, in float64, from the
    eigenvectors of its smaller Gram matrix: the same vectors as a full SVD (the top ones are
    what is kept), in a third of the time for bert-base's FFN weights."""
    import torch

    m = matrix.double()
    wide = m.shape[0] <= m.shape[1]
    values, vectors = torch.linalg.eigh(m @ m.t() if wide else m.t() @ m)  # ascending
    values, vectors = values.flip(0)[:terms], vectors.flip(1)[:, :terms]
    s = values.clamp(min=0).sqrt()
    other = (m.t() @ vectors if wide else m @ vectors) / torch.where(s > 0, s,
                                                                     torch.ones_like(s))
    return (vectors, s, other) if wide else (other, s, vectors)


def fit_template(layer, tensors):
    """An empty streamed layer about to hold a stored one: each Linear the store holds as a
    Kronecker product (a `<name>.layout` buffer) becomes an empty KroneckerLinear."""
    names = set(e["name"] for e in tensors)
    for name in sorted(n[:-len(".layout")] for n in names if n.endswith(".layout")):
        owner_path, _, attr = name.rpartition(".")
        owner = layer.get_submodule(owner_path) if owner_path else layer
        if type(getattr(owner, attr)).__name__ != "KroneckerLinear":
            setattr(owner, attr, kronecker_linear(1, 1, 1, 1, 1, False, name + ".bias" in names))


def kronecker_linear(m1, n1, m2, n2, terms, a_first, bias):
    """An unfilled KroneckerLinear (set_factors fills it)."""
    return _define()(m1, n1, m2, n2, terms, a_first, bias)


@lru_cache(maxsize=None)  # the class, defined once on first use: torch is imported lazily
def _define():
    import torch

    class KroneckerLinear(torch.nn.Module):
        """y = (A_1 (x) B_1 + ... + A_r (x) B_r) x + bias, in two Linears: `first` applies the
        stacked factors of the side that goes first to each row (or column) of X, `second` the
        other side's factors side by side to the result. `layout` (m1, n1, m2, n2, r, A first)
        travels with the weights, so a streamed layer reads its own."""

        def __init__(self, m1, n1, m2, n2, terms, a_first, bias):
            super(KroneckerLinear, self).__init__()
            if a_first:  # X^T A_k^T stacked, then B_k side by side
                first, second = (n1, terms * m1), (terms * n2, m2)
            else:  # X B_k^T stacked, then A_k side by side
                first, second = (n2, terms * m2), (terms * n1, m1)
            self.first = torch.nn.Linear(first[0], first[1], bias=False)
            self.second = torch.nn.Linear(second[0], second[1], bias=False)
            self.bias = torch.nn.Parameter(torch.zeros(m1 * m2), requires_grad=False) \
                if bias else None
            self.register_buffer("layout", torch.tensor(
                [m1, n1, m2, n2, terms, int(bool(a_first))], dtype=torch.long))
            self._read = (None, None)
            for p in self.parameters():
                p.requires_grad_(False)

        def dims(self):
            # a streamed layer's layout is replaced with its weights: read it again then only
            if self._read[0] is not self.layout:
                self._read = (self.layout, [int(v) for v in self.layout.tolist()])
            return self._read[1]

        def set_factors(self, a, b, bias):
            """a: (r, m1, n1), b: (r, m2, n2), bias: (m1 m2,) or None."""
            m1, n1, m2, n2, terms, a_first = self.dims()
            if a_first:
                first = a.reshape(terms * m1, n1)
                second = b.permute(1, 0, 2).reshape(m2, terms * n2)
            else:
                first = b.reshape(terms * m2, n2)
                second = a.permute(1, 0, 2).reshape(m1, terms * n1)
            self.first.weight = torch.nn.Parameter(first.float().contiguous(),
                                                   requires_grad=False)
            self.second.weight = torch.nn.Parameter(second.float().contiguous(),
                                                    requires_grad=False)
            if bias is not None:
                self.bias = torch.nn.Parameter(bias.float().clone(), requires_grad=False)

        def factors(self):
            """(a, b) as set_factors takes them, read back from the Linears (float weights)."""
            m1, n1, m2, n2, terms, a_first = self.dims()
            first, second = self.first.weight.detach(), self.second.weight.detach()
            if a_first:
                return (first.reshape(terms, m1, n1),
                        second.reshape(m2, terms, n2).permute(1, 0, 2))
            return (second.reshape(m1, terms, n1).permute(1, 0, 2),
                    first.reshape(terms, m2, n2))

        def forward(self, x):
            m1, n1, m2, n2, terms, a_first = self.dims()
            lead = x.shape[:-1]
            grid = x.reshape(-1, n1, n2)
            if a_first:
                z = self.first(grid.transpose(1, 2))  # (N, n2, r m1): X^T A_k^T
                z = z.reshape(-1, n2, terms, m1).permute(0, 3, 2, 1).reshape(-1, m1, terms * n2)
                y = self.second(z)  # (N, m1, m2): sum_k A_k X B_k^T
            else:
                z = self.first(grid)  # (N, n1, r m2): X B_k^T
                z = z.reshape(-1, n1, terms, m2).permute(0, 3, 2, 1).reshape(-1, m2, terms * n1)
                y = self.second(z).transpose(1, 2)  # (N, m2, m1) -> (N, m1, m2)
            y = y.reshape(lead + (m1 * m2,))
            return y + self.bias if self.bias is not None else y

        def extra_repr(self):
            m1, n1, m2, n2, terms, a_first = self.dims()
            return "A %dx%d, B %dx%d, terms=%d, %s first" % (m1, n1, m2, n2, terms,
                                                             "A" if a_first else "B")

    return KroneckerLinear
