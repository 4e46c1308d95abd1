"""Methods: what a variant does to a model, one module each, and the variant itself.

A variant is a name (what tables and plots show), a precision (fp32, fp16, int8), an execution
(eager, stream, stream+prefetch) and an ordered list of methods with their parameters. The agent
builds the fp32 model, applies the methods in order, counts its parameters and FLOPs, then turns
it into the precision and runs it the execution's way; a streamed variant's layer store holds
the transformed layers (farm/layerstore.py).

A method is a module (built in: one under agents/methods/, named in BUILTIN; or any file named in
$FARM_METHODS, for trying one out on local and cgroup devices) that declares:

    NAME       the key a sweep writes (`prune_heads: 0.5`)
    SUMMARY    one line for people
    CUDA       True if it runs on CUDA devices too (False: the variant runs on the CPU)
    INT8       True if it composes with precision: int8
    STREAM     True if it composes with streamed execution (its layers then live in the store)
    FIELDS     ((name, "int" | "float" | "text", unit, what it is), ...): figures it adds to results
    parameters(value) -> dict    the sweep's value checked and written canonically (a job's key
                                 is made of it), or MethodError naming the fix
    apply(model, params) -> dict   turn the fp32 model (in place) into the measured one; returns
                                   its FIELDS' values
  and, where it needs them:
    fit_template(layer, tensors)   (STREAM) shape an empty encoder layer like the stored one
                                   whose tensors (agents/layers.py entries) it is about to hold;
                                   a no-op where the shapes already match
    restores(config) / restore(model, config)   a checkpoint saved after the method changed its
                                   shapes: whether this transformers needs help to build it, and
                                   the help (before its weights load)
    stream_model(model, params, fields)   (STREAM) add what apply() put outside the encoder
                                   layers to a streamed model's skeleton, before its resident
                                   weights load (fields: the store's method figures)
    cost(params) -> float          relative work against the dense model (the scheduler's hint)
    SHOWN                          the FIELDS the methods table shows (default: all)
    stored(params) -> dict         (STREAM) the part of params that makes a layer store's bytes
                                   (default: all of them; stored_methods)
    expand(value) -> [(suffix, value)] or None   a sweep's value that names several variants
                                   (early_exit's thresholds: [...]): one per value, each named
                                   `<name>-<suffix>` (expand_entry)
    check(params, variant)         refuse (MethodError) a setting of these params that does not
                                   compose with the variant's precision or execution, where
                                   INT8 / STREAM / CUDA say too little (magnitude's sparse kernel)

A module the method puts into the model may declare `farm_flops(input) -> int`: the FLOPs of
one call on that input, where the shapes of its Linears do not say them (a sparse matmul);
agents/flops.py then counts such a model analytically.

Nothing outside this package asks a variant's name what it does: precision, execution and the
methods are read from the Variant.

This runs on the Jetson's Python 3.6: no dataclasses, no annotations, torch imported lazily.
"""
import importlib
import json
import os

from agents.methods import precision as precisions
from agents.spelling import with_guess

BUILTIN = ("prune_heads", "low_rank", "early_exit", "kronecker", "prune_ffn", "magnitude")
PLUGINS_ENV = "FARM_METHODS"  # extra method modules: file paths, separated by os.pathsep

EXECUTIONS = ("eager", "stream", "stream+prefetch")  # stream: agents/stream.py, on the CPU

# The variant strings of earlier releases: (precision, execution). Their jobs keep their keys.
NAMED = {
    "fp32": ("fp32", "eager"), "int8": ("int8", "eager"), "fp16": ("fp16", "eager"),
    "stream": ("fp32", "stream"), "stream+prefetch": ("fp32", "stream+prefetch"),
    "stream+int8": ("int8", "stream"), "stream+prefetch+int8": ("int8", "stream+prefetch"),
}
SETTINGS = ("name", "precision", "execution")  # a mapping's keys that are not methods
NAME_MAX = 32


class MethodError(ValueError):
    """A variant that cannot be what it says: `field` is where (a key of the variant's mapping,
    or a method's parameter under it), `fix` what to write instead."""

    def __init__(self, problem, fix, field=()):
        super(MethodError, self).__init__(problem)
        self.problem, self.fix, self.field = problem, fix, tuple(field)


def fraction_parameter(value, name, of):
    """{"fraction": F} from a sweep's `name: F` (or `name: {fraction: F}`), 0 < F < 1; `of`
    says what F is a fraction of ("each layer's heads")."""
    fraction = value.get("fraction") if isinstance(value, dict) else value
    if isinstance(value, dict) and set(value) - {"fraction"}:
        raise MethodError("unknown parameter(s) %s" % ", ".join(sorted(set(value) - {"fraction"})),
                          "write %s: F (a fraction of %s)" % (name, of))
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 < fraction < 1:
        raise MethodError("%s is %r, not a fraction between 0 and 1" % (name, fraction),
                          "write a fraction of %s above 0 and below 1, e.g. %s: 0.5" % (of, name))
    return {"fraction": float(fraction)}


# -- the registry ------------------------------------------------------------------------------
_loaded = {}  # the value of $FARM_METHODS -> {name: module}


def registry():
    """{name: module} of every method: the built-in ones, then $FARM_METHODS's."""
    plugins = os.environ.get(PLUGINS_ENV, "")
    if plugins not in _loaded:
        methods = {}
        for name in BUILTIN:
            methods[name] = importlib.import_module("agents.methods." + name)
        for path in [p for p in plugins.split(os.pathsep) if p]:
            module = _load_file(path)
            methods[module.NAME] = module
        _loaded[plugins] = methods
    return _loaded[plugins]


def _load_file(path):
    import importlib.util

    stem = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location("farm_method_" + stem, path)
    if spec is None:
        raise MethodError("%s=%s: %s is not a Python file" % (PLUGINS_ENV, path, path),
                          "name method modules (.py files) in %s" % PLUGINS_ENV)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for attribute in ("NAME", "parameters", "apply"):
        if not hasattr(module, attribute):
            raise MethodError("method module %s has no %s" % (path, attribute),
                              "see `Adding a method` in the README")
    return module


def method(name):
    methods = registry()
    if name not in methods:
        raise MethodError("unknown method %r" % name, with_guess(
            name, sorted(methods) + list(SETTINGS), "use one of: %s (or %s)" % (
                ", ".join(sorted(methods)), ", ".join(SETTINGS))), (name,))
    return methods[name]


def result_fields():
    """(name, type, unit, description) of the figures the built-in methods add to a result,
    each name once: the results table has a column for each (methods from $FARM_METHODS keep
    theirs in the result's extra figures)."""
    fields, seen = [], set()
    for name in BUILTIN:
        for field in getattr(importlib.import_module("agents.methods." + name), "FIELDS", ()):
            if field[0] not in seen:
                seen.add(field[0])
                fields.append(tuple(field))
    return fields


def expand_entry(entry):
    """A sweep's variant entry as the entries it names: itself, or one per value of a method
    whose parameters list several (each named `<name>-<suffix>`). One listing method a variant."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        return [entry]  # Variant.parse says what is wrong with it
    for key, given in entry.items():
        if key in SETTINGS:
            continue
        expanded = getattr(method(key), "expand", lambda value: None)(given)
        if expanded is not None:
            return [dict(entry, **{"name": "%s-%s" % (entry.get("name"), suffix), key: value})
                    for suffix, value in expanded]
    return [entry]


def table_fields():
    """The result_fields() that the methods table shows: a method's SHOWN names, where it
    declares them (early exit's figures have a table of their own), else all its FIELDS."""
    shown = set()
    for name in BUILTIN:
        module = importlib.import_module("agents.methods." + name)
        fields = getattr(module, "FIELDS", ())
        shown.update(getattr(module, "SHOWN", [f[0] for f in fields]))
    return [field for field in result_fields() if field[0] in shown]


# -- the variant -------------------------------------------------------------------------------
class Variant(object):
    """One variant of a sweep: name, precision, execution and (method, params) pairs in order."""

    __slots__ = ("name", "precision", "execution", "methods")

    def __init__(self, name, precision="fp32", execution="eager", methods=()):
        self.name, self.precision, self.execution = name, precision, execution
        self.methods = tuple((m, dict(p)) for m, p in methods)

    # reading one
    @classmethod
    def parse(cls, value):
        """A sweep's entry: a variant string of earlier releases, or a mapping
        {name: ..., precision: ..., execution: ..., <method>: <parameters>, ...}."""
        if isinstance(value, str):
            if value not in NAMED:
                raise MethodError("unknown variant %r" % value, with_guess(
                    value, NAMED, "use one of: %s, or a mapping such as "
                    "{name: heads-50, prune_heads: 0.5}" % ", ".join(NAMED)))
            precision, execution = NAMED[value]
            return cls(value, precision, execution)
        if not isinstance(value, dict):
            raise MethodError("a variant is a name or a mapping, not %r" % (value,),
                              "write e.g. int8, or {name: heads-50, prune_heads: 0.5}")
        name = value.get("name")
        _check_name(name)
        precision = value.get("precision", "fp32")
        if precision not in precisions.PRECISIONS:
            raise MethodError("unknown precision %r" % (precision,), with_guess(
                precision, precisions.PRECISIONS,
                "use one of: %s" % ", ".join(precisions.PRECISIONS)), ("precision",))
        execution = value.get("execution", "eager")
        if execution not in EXECUTIONS:
            raise MethodError("unknown execution %r" % (execution,), with_guess(
                execution, EXECUTIONS, "use one of: %s" % ", ".join(EXECUTIONS)), ("execution",))
        methods = []
        for key, given in value.items():
            if key in SETTINGS:
                continue
            module = method(key)
            try:
                methods.append((key, module.parameters(given)))
            except MethodError as error:
                raise MethodError(error.problem, error.fix, (key,) + error.field)
        variant = cls(name, precision, execution, methods)
        variant.check()
        return variant

    @classmethod
    def from_job(cls, job):
        """The variant of a job (or load command): its name, and its spec unless it is one of
        the named variants of earlier releases (whose jobs carry the name only)."""
        spec = job.get("variant_spec")
        if spec is None:
            return cls.parse(job["variant"])
        return cls(job["variant"], spec["precision"], spec["execution"],
                   [(m, p) for m, p in spec["methods"]])

    def check(self):
        """Refuse what cannot be combined: a method that does not compose with the precision or
        the execution, fp16 streamed (streaming is built for the CPU), a name of earlier
        releases used for something else."""
        if self.name in NAMED and (not self.plain or NAMED[self.name] != (
                self.precision, self.execution)):
            precision, execution = NAMED[self.name]
            raise MethodError(
                "name %r is the built-in variant (precision %s, execution %s)"
                % (self.name, precision, execution), "give this variant another name",
                ("name",))
        if self.streamed and not precisions.streams(self.precision):
            raise MethodError("%s runs on CUDA and streaming on the CPU" % self.precision,
                              "use precision fp32 or int8 with execution %s" % self.execution,
                              ("execution",))
        for name, params in self.methods:
            module = method(name)
            check = getattr(module, "check", None)
            if check is not None:
                try:
                    check(params, self)
                except MethodError as error:
                    raise MethodError(error.problem, error.fix, (name,) + error.field)
            if self.precision == "int8" and not getattr(module, "INT8", False):
                raise MethodError("%s does not compose with precision int8" % name,
                                  "drop precision: int8 from this variant", ("precision",))
            if self.streamed and not getattr(module, "STREAM", False):
                raise MethodError("%s does not compose with execution %s" % (name, self.execution),
                                  "use execution: eager for this variant", ("execution",))
            if self.cuda_only and not getattr(module, "CUDA", False):
                raise MethodError("%s runs on the CPU only, and %s needs CUDA"
                                  % (name, self.precision),
                                  "use precision fp32 or int8", ("precision",))

    # what it is
    @property
    def plain(self):
        """No methods: the model as it is, in a precision and an execution."""
        return not self.methods

    @property
    def named(self):
        """One of the variants of earlier releases, under its own name: its jobs are keyed by
        the name alone, as they always were."""
        return self.plain and NAMED.get(self.name) == (self.precision, self.execution)

    @property
    def streamed(self):
        return self.execution.startswith("stream")

    @property
    def prefetched(self):
        return self.execution == "stream+prefetch"

    @property
    def cuda_only(self):
        return precisions.runs_on(self.precision) == "cuda"

    @property
    def cpu_only(self):
        """Runs on the CPU even where a device has CUDA."""
        return (precisions.runs_on(self.precision) == "cpu" or self.streamed
                or any(not getattr(method(m), "CUDA", False) for m, _ in self.methods))

    def spec(self):
        """Everything that makes the variant what it is, but its name (JSON-ready)."""
        return {"precision": self.precision, "execution": self.execution,
                "methods": [[m, p] for m, p in self.methods]}

    def identity(self):
        """What a job's key is made of: the name, and the spec unless the variant is a named
        one of earlier releases (so that their keys stay as they were)."""
        if self.named:
            return {"variant": self.name}
        return {"variant": self.name, "variant_spec": self.spec()}

    def entry(self):
        """The variant as a sweep file writes it (a name, or a mapping)."""
        if self.named:
            return self.name
        entry = {"name": self.name}
        if self.precision != "fp32":
            entry["precision"] = self.precision
        if self.execution != "eager":
            entry["execution"] = self.execution
        for name, params in self.methods:
            entry[name] = params
        return entry

    def cost(self):
        """Relative work against the dense fp32 model (orders the queue; never shown)."""
        factor = precisions.cost(self.precision)
        for name, params in self.methods:
            estimate = getattr(method(name), "cost", None)
            if estimate is not None:
                factor *= estimate(params)
        return factor

    def __eq__(self, other):
        return isinstance(other, Variant) and self.name == other.name and \
            self.spec() == other.spec()

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((self.name, json.dumps(self.spec(), sort_keys=True)))

    def __repr__(self):
        return "Variant(%r)" % (self.entry(),)


def _check_name(name):
    import re

    if name is None:
        raise MethodError("a variant mapping needs a name", "add name: (what tables show)",
                          ("name",))
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", name) \
            or len(name) > NAME_MAX:
        raise MethodError("variant name %r is not a name" % (name,),
                          "use letters, digits and . _ + - (up to %d characters), starting "
                          "with a letter or digit" % NAME_MAX, ("name",))


# -- turning a model into the variant ----------------------------------------------------------
def apply_methods(model, variant):
    """Apply the variant's methods in order to an fp32 model (in place); their figures."""
    figures = {}
    for name, params in variant.methods:
        figures.update(method(name).apply(model, params) or {})
    return figures


def restores(config):
    """Whether a checkpoint's config carries a method's mark that this transformers will not
    shape the model by itself (heads pruned before it was saved, on transformers 5)."""
    return any(getattr(m, "restores", lambda c: False)(config) for m in registry().values())


def restore(model, config):
    """Shape a model built from such a config like its checkpoint, before the weights load."""
    for module in registry().values():
        if getattr(module, "restores", lambda c: False)(config):
            module.restore(model, config)


def stored_methods(variant):
    """[[name, params], ...] as far as they make a layer store's bytes: a method's stored(params)
    where it declares one (early exit's policy and threshold do not change the weights, so one
    store serves every threshold of a sweep), else its params."""
    return [[name, getattr(method(name), "stored", lambda p: p)(params)]
            for name, params in variant.methods]


def stream_model(model, variant_methods, method_fields):
    """A streamed model's skeleton, before its resident weights load: each method that keeps
    modules outside the encoder layers (early exit's heads) adds them, shaped as the store's."""
    for name, params in variant_methods:
        build = getattr(method(name), "stream_model", None)
        if build is not None:
            build(model, params, method_fields)


def fit_template(layer, tensors):
    """Shape an empty streamed encoder layer like the stored one whose tensors (agents/layers.py
    entries) it is about to hold: every method that changes a layer's shapes says how. All
    methods are asked, not only the variant's: a checkpoint saved after pruning is streamed with
    no method at all."""
    for module in registry().values():
        fit = getattr(module, "fit_template", None)
        if fit is not None:
            fit(layer, tensors)
