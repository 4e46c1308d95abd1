"""Iterative layer instantiation: a model whose encoder layers are brought from the layer store
(layers.py) one at a time, for each forward pass, and freed after they ran.

The model is transformers' own class, built with one empty layer module (two with prefetch) as a
template; each slot of its layer list holds a proxy that, when the model's own forward calls it,
fills a template with that layer's weights, runs it and empties it again. So every family's own
forward code (masks, ALBERT's shared group, DistilBERT's blocks) runs unchanged, and the logits
are the eager model's.

Reading: an fp32 layer's file is memory-mapped and every page faulted in before the layer runs,
so the read happens (and is timed) in the loader, not hidden inside the compute; its tensors are
the mapped pages themselves (no copy). An int8 layer is read and packed for the device's
quantized kernels (packing cannot work in place). After a layer ran, its pages are unmapped and
dropped from the page cache: the next pass reads it from storage again, as a device whose memory
cannot hold the model must. With prefetch, layer i+1 is read on a background thread while layer i
computes, so a pass costs about the larger of compute and read time, holding two layers.
"""
import mmap
import os
import threading
import time

from agents import layers, methods

PAGE = mmap.PAGESIZE


class StreamStats(object):
    """What the loader did, summed since the last reset (the controller wants it per pass):
    layer loads and their bytes; read_s, the time spent reading them on any thread; wait_s, the
    time the computing thread spent on layers instead of computing (waiting for a read, reading
    itself without prefetch, and unmapping a layer after it ran)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.passes, self.loads, self.bytes, self.read_s, self.wait_s = 0, 0, 0, 0.0, 0.0

    def loaded(self, size, seconds):
        with self.lock:
            self.loads += 1
            self.bytes += size
            self.read_s += seconds


class _Slot(object):
    """A template layer module, what it holds now, and the shape it has been given."""

    def __init__(self, module, shape):
        self.module, self.unit, self.mapping = module, None, None  # mapping: (fd, mmap)
        self.shape = shape  # the index of the unit shape it fits (_shapes)


class Streamer(object):
    def __init__(self, folder, manifest, templates, prefetch, placeholder):
        self.folder, self.manifest = folder, manifest
        self.order = manifest["order"]
        self.shapes = _shapes(manifest)  # unit -> which distinct shape of layer it is
        self.slots = [_Slot(t, self.shapes[0]) for t in templates]
        self.prefetch = prefetch and len(self.slots) > 1
        self.placeholder = placeholder
        self.quantized = manifest["precision"] == "int8"
        self.stats = StreamStats()
        self.position, self.current, self.pending = 0, None, None
        self.pool = None
        if self.prefetch:
            from concurrent.futures import ThreadPoolExecutor
            self.pool = ThreadPoolExecutor(max_workers=1)
        for unit in manifest["units"]:  # start cold: this run reads from storage
            layers.forget(os.path.join(folder, unit["file"]))

    # -- a forward pass ------------------------------------------------------------------------
    def begin_pass(self):
        self.end_pass(count=False)
        self.position = 0
        if self.prefetch:  # the first layer reads while the embeddings compute
            self.pending = (self.order[0], self.pool.submit(self._load,
                                                            self._claim(self.order[0])))

    def end_pass(self, count=True):
        if self.pending is not None:
            slot = self.pending[1].result()
            self._free(slot)
            self.pending = None
        if self.current is not None:
            self._free(self.current)
            self.current = None
        if count:
            self.stats.passes += 1

    def enter(self):
        """The template holding the layer this call of the pass needs, loaded."""
        position, self.position = self.position, self.position + 1
        unit = self.order[position]
        if self.current is not None and self.current.unit == unit:
            return self.current.module  # ALBERT: the shared group stays for its next call
        started = time.perf_counter()
        if self.pending is not None and self.pending[0] == unit:
            slot = self.pending[1].result()
            self.pending = None
        else:
            slot = self._load(self._claim(unit))
        self.stats.wait_s += time.perf_counter() - started
        self.current = slot
        following = self.order[position + 1] if position + 1 < len(self.order) else None
        if self.prefetch and following is not None and following != unit:
            self.pending = (following, self.pool.submit(self._load, self._claim(following)))
        return slot.module

    def leave(self):
        """After a call: free its layer unless the next call uses the same one."""
        following = self.order[self.position] if self.position < len(self.order) else None
        if self.current is not None and following != self.current.unit:
            self._free(self.current)
            self.current = None

    def _free(self, slot):
        """Release a layer on the computing thread: that time is the pass's, not compute's."""
        started = time.perf_counter()
        self._release(slot)
        self.stats.wait_s += time.perf_counter() - started

    def _claim(self, unit):
        """A free template for `unit`, marked taken here, before any thread fills it."""
        for slot in self.slots:
            if slot.unit is None:
                slot.unit = unit
                return slot
        raise layers.StoreError("no free layer slot (a layer was not released)")

    # -- reading and freeing one unit ------------------------------------------------------------
    def _load(self, slot):
        started = time.perf_counter()
        entry = self.manifest["units"][slot.unit]
        if slot.shape != self.shapes[slot.unit]:  # layers of other shapes (heads pruned unevenly)
            shape(slot.module, entry["tensors"], self.placeholder)
            slot.shape = self.shapes[slot.unit]
        path = os.path.join(self.folder, entry["file"])
        if self.quantized:
            with open(path, "rb") as f:
                set_contents(slot.module, _read_contents(f, entry["tensors"]))
                layers.drop_cached(f.fileno())
        else:
            set_contents(slot.module, self._map(path, entry, slot))
        self.stats.loaded(entry["bytes"], time.perf_counter() - started)
        return slot

    def _map(self, path, entry, slot):
        import torch

        fd = os.open(path, os.O_RDONLY)
        layers.read_ahead(fd)
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
        slot.mapping = (fd, mapped)
        raw = layers.array(mapped, {"dtype": "uint8", "shape": [len(mapped)], "offset": 0})
        # One byte of every page: the fault brings the page in from storage now. torch's sum
        # runs without the GIL, so a prefetching thread does not stall the computing one.
        torch.from_numpy(raw[::PAGE]).sum()
        del raw
        return [(t["name"], t["kind"], torch.from_numpy(layers.array(mapped, t)))
                for t in entry["tensors"]]

    def _release(self, slot):
        if self.quantized:  # packed weights stay in the template until the next unit replaces them
            slot.unit = None
            return
        for entry in self.manifest["units"][slot.unit]["tensors"]:
            empty = self.placeholder if entry["kind"] == "param" else self.placeholder.data
            _set(slot.module, entry["name"], entry["kind"], empty)
        fd, mapped = slot.mapping
        try:
            mapped.close()
        except BufferError:  # a view still alive somewhere: the mapping goes with it
            pass
        layers.drop_cached(fd)
        os.close(fd)
        slot.mapping, slot.unit = None, None

    def close(self):
        self.end_pass(count=False)
        if self.pool is not None:
            self.pool.shutdown(wait=True)


# -- building the model --------------------------------------------------------------------------
def open_model(folder, prefetch=False, variant_methods=None):
    """The store's model with streamed layers; `model.farm_stream` is its Streamer.
    variant_methods ([(name, params)], default: the store's own) are asked to give the model
    what they keep outside its layers before the resident weights load (early exit's heads)."""
    import torch
    from transformers import AutoConfig

    manifest = layers.read_manifest(folder)
    config = AutoConfig.from_pretrained(folder)
    units, order = len(manifest["units"]), manifest["order"]
    templates = 2 if prefetch and len(set(order)) > 1 else 1
    shared = units != len(order)
    model = _skeleton(config, None if shared else templates)
    path, layer_list = layers.layer_list(model)
    if path != manifest["layers_path"]:
        raise layers.StoreError("the store's layers are at %s; this transformers builds them at %s"
                                % (manifest["layers_path"], path))
    template_modules = list(layer_list)[:templates]
    placeholder = torch.nn.Parameter(torch.empty(0), requires_grad=False)
    for template in template_modules:
        shape(template, manifest["units"][0]["tensors"], placeholder)
    methods.stream_model(model, manifest.get("methods", []) if variant_methods is None
                         else variant_methods, manifest.get("method_fields", {}))
    for entry in manifest["resident"]["tensors"]:
        if entry["kind"] == "qlinear":
            _replace(model, entry["name"], layers.empty_qlinear(entry))
    with open(os.path.join(folder, manifest["resident"]["file"]), "rb") as f:
        set_contents(model, _read_contents(f, manifest["resident"]["tensors"]))
    streamer = Streamer(folder, manifest, template_modules, prefetch, placeholder)
    _install(model, layer_list, template_modules, streamer, units)
    _check_materialized(model)
    model.farm_stream = streamer
    return model.eval()


def shape(template, tensors, placeholder):
    """Make an empty template layer hold a stored layer's kind of tensors: the structure the
    methods gave the stored layers (pairs for low_rank, fewer heads), empty quantized Linears
    where the store has int8 ones, and placeholders for every weight until a unit fills them."""
    methods.fit_template(template, tensors)
    for entry in tensors:
        if entry["kind"] == "qlinear":
            _replace(template, entry["name"], layers.empty_qlinear(entry))
        else:
            _set(template, entry["name"], entry["kind"], placeholder)


def _shapes(manifest):
    """unit -> the index of its distinct layer shape (names, kinds, tensor shapes)."""
    seen, shapes = {}, []
    for unit in manifest["units"]:
        signature = tuple((t["name"], t["kind"], str(t.get("shape") or t.get("weight")))
                          for t in unit["tensors"])
        shapes.append(seen.setdefault(signature, len(seen)))
    return shapes


def _skeleton(config, templates):
    """transformers' model for `config` with `templates` encoder layers (None: as configured),
    its tensors left unmaterialized where the torch can (the meta device), uninitialized where
    it cannot: either way no memory is spent on weights the store replaces."""
    import torch
    from transformers import AutoModelForSequenceClassification

    layers_total = config.num_hidden_layers
    # Pruned heads are the stored layers' business (shape()): transformers 4 would prune the
    # template layers by layer numbers they do not have.
    pruned, config.pruned_heads = getattr(config, "pruned_heads", None), {}
    if templates is not None:
        config.num_hidden_layers = templates
    try:
        if hasattr(torch.device("cpu"), "__enter__"):  # torch 2: modules on the meta device
            with torch.device("meta"):
                model = AutoModelForSequenceClassification.from_config(config)
        else:
            with _uninitialized():
                model = AutoModelForSequenceClassification.from_config(config)
    finally:
        config.num_hidden_layers = layers_total
        config.pruned_heads = pruned
    model.config.num_hidden_layers = layers_total
    return model


class _uninitialized(object):
    """Old torch (no meta device): skip weight initialization, so that the skeleton's tensors
    are allocated but never written, and cost no resident memory before they are replaced."""
    NAMES = ("uniform_", "normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
             "xavier_normal_", "trunc_normal_", "zeros_", "ones_", "constant_")

    def __enter__(self):
        import torch
        self.saved = {n: getattr(torch.nn.init, n) for n in self.NAMES if hasattr(torch.nn.init, n)}
        for name in self.saved:
            setattr(torch.nn.init, name, lambda tensor, *a, **k: tensor)
        self.saved_methods = {n: getattr(torch.Tensor, n) for n in ("normal_", "zero_", "fill_")}
        for name in self.saved_methods:
            setattr(torch.Tensor, name, lambda tensor, *a, **k: tensor)

    def __exit__(self, *exc):
        import torch
        for name, function in self.saved.items():
            setattr(torch.nn.init, name, function)
        for name, method in self.saved_methods.items():
            setattr(torch.Tensor, name, method)


def _proxy_class():
    import torch

    class StreamedLayer(torch.nn.Module):
        """A slot of the layer list: the layer's weights are there only while it runs."""

        def __init__(self, streamer, unit):
            super(StreamedLayer, self).__init__()
            self.unit = unit
            object.__setattr__(self, "streamer", streamer)  # not a submodule

        def forward(self, *args, **kwargs):
            module = self.streamer.enter()
            try:
                return module(*args, **kwargs)
            finally:
                self.streamer.leave()

        def extra_repr(self):
            return "unit=%d" % self.unit

    return StreamedLayer


def _install(model, layer_list, templates, streamer, units):
    """One proxy per layer module (per shared group for ALBERT) in the model's layer list."""
    import torch

    proxy = _proxy_class()
    for name in list(layer_list._modules):
        del layer_list._modules[name]
    for index in range(units):
        layer_list.append(proxy(streamer, index))
    model.add_module("farm_layer_templates", torch.nn.ModuleList(templates))
    model.register_forward_pre_hook(lambda *_: streamer.begin_pass())
    model.register_forward_hook(lambda *_: streamer.end_pass())


def _check_materialized(model):
    empty = [name for name, t in list(model.named_parameters()) + list(model.named_buffers())
             if t.device.type == "meta"]
    if empty:
        raise layers.StoreError("the layer store has no weights for %s" % ", ".join(empty[:5]))


# -- tensors into modules ------------------------------------------------------------------------
def _read_contents(f, entries):
    """(name, kind, value) for each stored entry: tensors read into memory of their own, and
    quantized Linears as (int8 weight as a quantized tensor, fp32 bias)."""
    import torch

    contents = []
    for entry in entries:
        if entry["kind"] != "qlinear":
            contents.append((entry["name"], entry["kind"],
                             torch.from_numpy(layers.read_array(f, entry))))
            continue
        weight = torch._make_per_tensor_quantized_tensor(
            torch.from_numpy(layers.read_array(f, entry["weight"])), entry["scale"],
            entry["zero_point"])
        bias = (torch.from_numpy(layers.read_array(f, entry["bias"]))
                if entry["bias"] is not None else None)
        contents.append((entry["name"], "qlinear", (weight, bias)))
    return contents


def set_contents(root, contents):
    for name, kind, value in contents:
        if kind == "qlinear":
            _module(root, name).set_weight_bias(*value)
        else:
            _set(root, name, kind, value)


def _module(root, dotted):
    module = root
    for part in dotted.split(".") if dotted else []:
        module = module._modules[part]
    return module


def _set(root, name, kind, tensor):
    import torch

    owner_path, _, attr = name.rpartition(".")
    try:
        owner = _module(root, owner_path)
    except KeyError:
        owner = None
    if kind == "param":
        if owner is None or attr not in owner._parameters:
            raise layers.StoreError("the store has a weight %s this model does not have" % name)
        if not isinstance(tensor, torch.nn.Parameter):
            tensor = torch.nn.Parameter(tensor, requires_grad=False)
        owner._parameters[attr] = tensor
    elif owner is not None and attr in owner._buffers:
        owner._buffers[attr] = tensor
    # a buffer this transformers version does not keep (or keeps under another name) is skipped


def _replace(root, name, module):
    owner_path, _, attr = name.rpartition(".")
    _module(root, owner_path)._modules[attr] = module
