"""The per-layer weight store: a model's encoder layers, each in a file of its own, so that a
device can hold one layer's weights in memory at a time (the `stream` variants, stream.py).

A store is a folder, named by the content hash of what it was made from (farm/layerstore.py):
  manifest.json   format, precision, model type, parameter count, where the encoder's layer list
                  sits in the model, each unit's file and tensors, the order in which a
                  forward pass calls the units, and the methods applied with their figures
  config.json     the model's own transformers configuration
  resident.bin    everything outside the encoder layers: embeddings, pooler, classifier
  unit-000.bin..  one file per encoder layer (ALBERT: one per shared layer group)
  COMPLETE        written last: a folder without it is never used
Tensors are raw little-endian bytes at 64-byte-aligned offsets described by the manifest. Any
Python with numpy reads them: no pickle, and no safetensors, which the Jetson's Python 3.6 and
torch 1.10 do not have; fp32 layers can be memory-mapped where they lie. An int8 store holds each
dynamically quantized Linear as torch's quantize_dynamic made it (int8 weight, scale, zero
point, fp32 bias); the device packs them for its own kernels as it loads them.
"""
import json
import os

FORMAT = 1
ALIGN = 64
MANIFEST = "manifest.json"
COMPLETE = "COMPLETE"
RESIDENT = "resident.bin"
_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")


class StoreError(Exception):
    """A layer store that cannot be made or read."""


def layer_list(model):
    """(dotted path, ModuleList) of the encoder's layers: the model's first ModuleList, which in
    every BERT-like family (bert, roberta, electra, mobilebert: encoder.layer; distilbert:
    transformer.layer; albert: encoder.albert_layer_groups) is the stack of layers."""
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            return name, module
    raise StoreError("%s has no list of encoder layers to stream" % type(model).__name__)


def encoder_linears(model):
    """(owner, attribute, Linear) of every torch.nn.Linear inside the encoder's layers, each
    module once (ALBERT's layers share one group): what the factorizing methods replace."""
    import torch

    found, seen = [], set()
    for layer in layer_list(model)[1]:
        for _, owner in layer.named_modules():
            for attr, child in list(owner._modules.items()):
                if isinstance(child, torch.nn.Linear) and id(child) not in seen:
                    seen.add(id(child))
                    found.append((owner, attr, child))
    return found


def sliced_linear(linear, index, dim):
    """A new Linear holding only the rows (dim 0, with their biases) or the columns (dim 1; the
    bias stays whole) of `linear` at `index`: what structured pruning keeps."""
    import torch

    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias
    if bias is not None:
        bias = (bias.detach()[index] if dim == 0 else bias.detach()).clone()
    pruned = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    pruned.weight = torch.nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        pruned.bias = torch.nn.Parameter(bias, requires_grad=False)
    return pruned


def call_order(config, units):
    """The unit each of a forward pass's layer calls uses: 0..N-1, or for ALBERT's shared groups
    the group of each of its num_hidden_layers calls (transformers' own formula)."""
    layers = int(config.num_hidden_layers)
    if units == layers:
        return list(range(layers))
    groups = int(getattr(config, "num_hidden_groups", 0) or 0)
    if groups != units:
        raise StoreError("%d layer modules for %d layers, and no shared layer groups to explain it"
                         % (units, layers))
    return [int(i / (layers / float(groups))) for i in range(layers)]


def is_quantized_linear(module):
    """A Linear made by torch's dynamic quantization (torch.ao.nn or torch.nn path)."""
    kind = type(module)
    return kind.__name__ == "Linear" and ".quantized.dynamic" in kind.__module__


def quantized_linear_class():
    import torch

    ao = getattr(torch, "ao", None)
    try:
        return ao.nn.quantized.dynamic.Linear
    except AttributeError:
        return torch.nn.quantized.dynamic.Linear


def empty_qlinear(entry):
    """An unfilled dynamically quantized Linear of a stored qlinear entry's shape."""
    import torch

    out_features, in_features = entry["weight"]["shape"]
    return quantized_linear_class()(in_features, out_features, bias_=entry["bias"] is not None,
                                    dtype=torch.qint8)


def _contents(module, skip=None):
    """(name, kind, value) of what a module holds: ("param" | "buffer", tensor) directly, or
    ("qlinear", quantized Linear) for a dynamically quantized Linear; `skip` prunes a subtree."""
    quantized = []
    for path, child in module.named_modules():
        if skip is not None and (path == skip or path.startswith(skip + ".")):
            continue
        if any(path.startswith(q + ".") for q in quantized):
            continue
        prefix = path + "." if path else ""
        if is_quantized_linear(child):
            quantized.append(path)
            yield path, "qlinear", child
            continue
        for name, tensor in child._parameters.items():
            if tensor is not None:
                yield prefix + name, "param", tensor
        for name, tensor in child._buffers.items():
            if tensor is not None:
                yield prefix + name, "buffer", tensor


class _Writer(object):
    def __init__(self, path):
        self.path, self.file, self.offset = path, open(path, "wb"), 0

    def tensor(self, tensor):
        import numpy

        array = tensor.detach().cpu().contiguous().numpy()
        if array.dtype.name not in _DTYPES:
            raise StoreError("cannot store a %s tensor" % array.dtype.name)
        pad = (-self.offset) % ALIGN
        self.file.write(b"\0" * pad)
        self.offset += pad
        data = numpy.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
        self.file.write(data.tobytes())
        entry = {"dtype": array.dtype.name, "shape": list(array.shape), "offset": self.offset,
                 "nbytes": int(data.nbytes)}
        self.offset += data.nbytes
        return entry

    def close(self):
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return self.offset


def _write_section(path, contents):
    import torch

    writer, entries = _Writer(path), []
    for name, kind, value in contents:
        if kind != "qlinear":
            entries.append(dict(writer.tensor(value), name=name, kind=kind))
            continue
        weight, bias = value._packed_params._weight_bias()
        if weight.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise StoreError("%s is quantized %s; only per-tensor int8 is stored"
                             % (name, weight.qscheme()))
        entries.append({"name": name, "kind": "qlinear", "scale": float(weight.q_scale()),
                        "zero_point": int(weight.q_zero_point()),
                        "weight": writer.tensor(weight.int_repr()),
                        "bias": writer.tensor(bias) if bias is not None else None})
    return entries, writer.close()


def write(model, folder, precision, params, methods=(), method_fields=None, nonzero=None):
    """Write `model` (fp32, or as quantize_dynamic left it for int8; after the variant's
    `methods`, [[name, params], ...], whose figures are `method_fields`; `params` parameters,
    `nonzero` of them not zero, both counted on the fp32 model) into `folder` as a store. The
    caller writes COMPLETE once the folder is whole (farm/layerstore.py)."""
    path, layers = layer_list(model)
    order = call_order(model.config, len(layers))
    model.config.to_json_file(os.path.join(folder, "config.json"))
    resident, resident_bytes = _write_section(os.path.join(folder, RESIDENT),
                                              _contents(model, skip=path))
    units = []
    for index, layer in enumerate(layers):
        name = "unit-%03d.bin" % index
        tensors, size = _write_section(os.path.join(folder, name), _contents(layer))
        units.append({"file": name, "bytes": size, "tensors": tensors})
    manifest = {"format": FORMAT, "precision": precision, "model_type": model.config.model_type,
                "params": int(params), "layers_path": path, "order": order,
                "resident": {"file": RESIDENT, "bytes": resident_bytes, "tensors": resident},
                "units": units}
    if nonzero is not None:
        manifest["nonzero_params"] = int(nonzero)
    if methods:  # only then, so that stores of plain models keep their manifests
        manifest.update(methods=[list(m) for m in methods], method_fields=method_fields or {})
    with open(os.path.join(folder, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return manifest


def read_manifest(folder):
    if not os.path.exists(os.path.join(folder, COMPLETE)):
        raise StoreError("no complete layer store at %s" % folder)
    with open(os.path.join(folder, MANIFEST)) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise StoreError("layer store %s has format %r; this agent reads format %d"
                         % (folder, manifest.get("format"), FORMAT))
    return manifest


def array(buffer, entry):
    """A numpy view of one stored tensor inside `buffer` (an mmap, or bytes read)."""
    import numpy

    dtype = numpy.dtype(entry["dtype"]).newbyteorder("<")
    count = 1
    for size in entry["shape"]:
        count *= size
    return numpy.frombuffer(buffer, dtype=dtype, count=count,
                            offset=entry["offset"]).reshape(entry["shape"])


def read_array(f, entry):
    """One stored tensor read from an open file into memory of its own (writable)."""
    import numpy

    data = numpy.empty(entry["nbytes"], dtype=numpy.uint8)
    f.seek(entry["offset"])
    if f.readinto(memoryview(data)) != entry["nbytes"]:
        raise StoreError("%s ends before its tensor at offset %d" % (f.name, entry["offset"]))
    return data.view(numpy.dtype(entry["dtype"]).newbyteorder("<")).reshape(entry["shape"])


def drop_cached(fd):
    """Ask the kernel to forget a file's cached pages: the weights live in storage, and the next
    read of them is a real read, not a copy out of memory the figures would not show."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def forget(path):
    """drop_cached for a file by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        drop_cached(fd)
    finally:
        os.close(fd)


def read_ahead(fd):
    """Start reading a whole file in the background (the kernel's readahead)."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
