"""early_exit: {policy: P, threshold: T | patience: N} or {exit_at: K} -- stop a forward pass at
the first layer whose exit head is confident enough (agents/exits.py).

    early_exit: {policy: entropy, threshold: 0.2}       DeeBERT: the head's entropy below T
    early_exit: {policy: confidence, threshold: 0.9}    the head's top probability above T
    early_exit: {policy: patience, patience: 2}         PABEE: the argmax unchanged N layers
    early_exit: {exit_at: 3}                            always stop after layer 3 (any model)
    early_exit: {policy: entropy, thresholds: [0.05, 0.1, 0.2]}   one variant per value
                (so too patience: [1, 2, 3] and exit_at: [1, 2, 3]): one sweep, the whole curve
    padding: none (default) | max_length    each example at its own length, or padded to the
                job's seq_len

The exit heads come with the checkpoint (DeeBERT's, PABEE's or farm's own layout; `farm exits
fit` adds farm's to a checkpoint that has none); exit_at on a model without heads uses seeded
random ones, for the cost alone. Its cost depends on the input, so a job with early exit is
timed per example (agents/exit_timing.py) beside the same backbone at full depth.
"""
from agents.methods import MethodError
from agents.spelling import with_guess

NAME = "early_exit"
SUMMARY = "stop at the first layer whose exit head is confident (DeeBERT, PABEE, exit_at)"
CUDA = True
INT8 = True
STREAM = True  # heads live with the resident weights; layers past the exit are never read
FIELDS = (
    ("exit_heads", "text", "", "where the exit heads came from: deebert, pabee, farm, random"),
    ("exit_layers", "int", "layers", "the backbone's depth L"),
    ("exit_layer_mean", "float", "layers", "mean exit layer over the examples"),
    ("exit_histogram", "text", "examples", "examples exiting at layers 1..L (JSON list)"),
    ("exit_batch_layers_mean", "float", "layers",
     "layers a batch ran (it stops when every example in it has exited)"),
    ("exit_expected_saving", "float", "", "1 - mean exit layer / L (DeeBERT's expected saving)"),
    ("exit_speedup", "float", "x", "full-depth latency / early-exit latency, same examples, "
                                   "timed interleaved in the same job"),
    ("exit_example_ms", "float", "ms", "mean latency of an example (its call's)"),
    ("exit_example_p50_ms", "float", "ms", "median per-example latency"),
    ("exit_example_p90_ms", "float", "ms", "90th percentile per-example latency"),
    ("exit_example_p99_ms", "float", "ms", "99th percentile per-example latency"),
    ("exit_full_ms", "float", "ms", "mean per-example latency of the full-depth backbone"),
    ("exit_flops_mean", "float", "FLOPs", "FLOPs spent per example: layers run and every exit "
                                          "head evaluated"),
    ("exit_bytes_mean", "float", "bytes", "layer bytes read per example (streamed)"),
)
SHOWN = ("exit_layer_mean", "exit_speedup")  # the rest: farm table's early-exit table

POLICIES = ("entropy", "confidence", "patience")
PADDINGS = ("none", "max_length")
_LISTS = {"thresholds": "threshold", "patience": "patience", "exit_at": "exit_at"}
_FIX = ("write early_exit: {policy: entropy, threshold: 0.2}, {policy: patience, patience: 2} "
        "or {exit_at: 3}")


def expand(value):
    """A list of values (thresholds:, patience:, exit_at:) -> [(name suffix, value)], one per
    value; None where the value names one variant."""
    if not isinstance(value, dict):
        return None
    for key, single in _LISTS.items():
        listed = value.get(key)
        if isinstance(listed, (list, tuple)):
            rest = dict((k, v) for k, v in value.items() if k != key)
            return [(_suffix(v), dict(rest, **{single: v})) for v in listed]
    return None


def _suffix(value):
    return ("%g" % value) if isinstance(value, float) else str(value)


def parameters(value):
    if not isinstance(value, dict):
        raise MethodError("early_exit takes a mapping, not %r" % (value,), _FIX)
    known = ("policy", "threshold", "patience", "exit_at", "padding")
    unknown = sorted(set(value) - set(known), key=str)
    if unknown:
        raise MethodError("unknown parameter(s) %s" % ", ".join(map(str, unknown)),
                          with_guess(unknown[0], known, _FIX), (unknown[0],))
    padding = value.get("padding", "none")
    if padding not in PADDINGS:
        raise MethodError("padding is %r" % (padding,), "write padding: none (each example at "
                          "its own length) or padding: max_length", ("padding",))
    if "exit_at" in value or value.get("policy") == "exit_at":
        if set(value) - {"exit_at", "padding", "policy"} or value.get("policy", "exit_at") \
                != "exit_at":
            raise MethodError("exit_at takes no policy", "write early_exit: {exit_at: K}",
                              ("exit_at",))
        return {"policy": "exit_at", "exit_at": _whole(value["exit_at"], "exit_at"),
                "padding": padding}
    policy = value.get("policy", "entropy")
    if policy not in POLICIES:
        raise MethodError("policy is %r" % (policy,), "use one of: %s" % ", ".join(POLICIES),
                          ("policy",))
    if policy == "patience":
        if "threshold" in value:
            raise MethodError("patience takes no threshold", "write patience: N", ("threshold",))
        return {"policy": policy, "patience": _whole(value.get("patience"), "patience"),
                "padding": padding}
    if "patience" in value:
        raise MethodError("%s takes a threshold, not patience" % policy, _FIX, ("patience",))
    threshold = value.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
        raise MethodError("threshold is %r" % (threshold,), "write a number of at least 0 "
                          "(entropy in nats; confidence a probability)", ("threshold",))
    return {"policy": policy, "threshold": float(threshold), "padding": padding}


def _whole(value, field):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MethodError("%s is %r, not a whole number of layers" % (field, value),
                          "write a whole number of at least 1", (field,))
    return value


def apply(model, params):
    import os

    from agents import exits

    layers = exits.depth(model.config)
    if params["policy"] == "exit_at" and params["exit_at"] > layers:
        raise MethodError("exit_at %d, and the model has %d layers" % (params["exit_at"], layers),
                          "use exit_at between 1 and %d" % layers)
    folder = getattr(model.config, "_name_or_path", "") or ""
    try:
        layout = exits.attach(model, params, folder if os.path.isdir(folder) else None)
    except exits.ExitError as error:
        raise MethodError(str(error), "use exit_at: K on a regression model" if
                          model.config.num_labels == 1 else "fit exit heads first: farm exits "
                          "fit CHECKPOINT --task T --data-dir D, or use exit_at: K")
    return {"exit_heads": layout, "exit_layers": layers}


def stored(params):
    """What a layer store of an early-exit variant depends on: only whether its heads may be
    seeded random ones (exit_at) or must come with the checkpoint; the policy, its value and
    the padding are the job's (stream_model takes them from the variant)."""
    return {"exit_at_only": params["policy"] == "exit_at"}


def stream_model(model, params, fields):
    """A streamed model's heads, of the layout the store was made with (weights follow)."""
    from agents import exits

    exits.skeleton(model, params, fields["exit_heads"])
