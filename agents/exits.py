"""Models with exits: a classifier after every encoder layer, and a pass that stops at the first
layer whose prediction is confident enough.

Exit heads come from a checkpoint folder, in one of three layouts (read_heads):
  deebert  DeeBERT's own checkpoints: a highway per layer, `bert.encoder.highway.{i}.pooler.dense.*`
           and `bert.encoder.highway.{i}.classifier.*`; the last layer exits through the model's
           own pooler and classifier (its highway, where saved, is not used)
  pabee    PABEE's: `classifiers.{i}.*`, one Linear per layer over the model's shared pooler;
           the last layer's prediction is classifiers.{L-1}
  farm     farm's own (written by `farm exits fit`): a standard save_pretrained checkpoint plus
           exit_heads.bin (a torch state dict, `{i}.pooler.dense.*` and `{i}.classifier.*` for
           layers i = 0 .. L-2, DeeBERT's highway shape) and exit_heads.json (format, layers,
           what they were fitted on); the last layer exits through the model's own head
A model with none (a catalog architecture, a plain checkpoint) gets seeded random heads of the
same shape, for `exit_at: k` only: the deterministic cost of k layers and one exit head.

A pass runs the model's own forward, whatever its family, with a hook after every encoder layer
call: the hook evaluates that layer's head where the policy needs it and ends the pass (an
exception the runner catches) once every example of the batch has exited. So a pass that exits
at layer k has run k layers, and the heads it evaluated, nothing more.

Policies, per example, at layer i (1-based) of L:
  entropy t      exit if the entropy (nats) of the head's softmax is below t (DeeBERT)
  confidence t   exit if the head's largest softmax probability is above t
  patience p     exit once the argmax has stayed the same for p consecutive layers (PABEE)
  exit_at k      exit at layer k, evaluating no other head
  full           no exit: the full depth (the backbone the early exits are compared with)
Examples that never exit take the last layer's prediction.

This runs on the Jetson's Python 3.6: no dataclasses, no annotations, torch imported lazily.
"""
import json
import os

LAYOUTS = ("deebert", "pabee", "farm", "random")
FARM_WEIGHTS = "exit_heads.bin"
FARM_META = "exit_heads.json"
FARM_FORMAT = 1
RANDOM_SEED = 1234  # heads of a model that has none (exit_at only): the same on every device
_DEEBERT = "encoder.highway."
_PABEE = "classifiers."


class ExitError(Exception):
    """A model whose exits cannot be what the variant asks."""


class _Stop(Exception):
    """Every example of the batch has exited: the rest of the pass is not run."""


# -- heads ---------------------------------------------------------------------------------------
_classes = {}


def _head_class():
    """An exit head: a pooler (dense + tanh on the first token) and a classifier."""
    if "Head" not in _classes:
        import torch

        class Pooler(torch.nn.Module):
            def __init__(self, dense):
                super(Pooler, self).__init__()
                self.dense = dense

            def forward(self, hidden):
                return torch.tanh(self.dense(hidden[:, 0]))

        class Head(torch.nn.Module):
            def __init__(self, pooler, classifier):
                super(Head, self).__init__()
                self.pooler, self.classifier = pooler, classifier

            def forward(self, hidden):
                return self.classifier(self.pooler(hidden))

        _classes["Head"], _classes["Pooler"] = Head, Pooler
    return _classes["Head"], _classes["Pooler"]


def new_heads(hidden, labels, count, seed=None):
    """`count` heads of DeeBERT's shape (hidden -> hidden -> labels), freshly initialized."""
    import torch

    Head, Pooler = _head_class()
    if seed is not None:
        torch.manual_seed(seed)
    return torch.nn.ModuleList([Head(Pooler(torch.nn.Linear(hidden, hidden)),
                                     torch.nn.Linear(hidden, labels)) for _ in range(count)])


def hidden_size(config):
    return int(getattr(config, "hidden_size", None) or config.dim)


def depth(config):
    return int(config.num_hidden_layers if hasattr(config, "num_hidden_layers")
               else config.n_layers)


def read_heads(model, folder):
    """(layout, ModuleList of heads) for the checkpoint at `folder` that `model` was built
    from: deebert and farm hold L-1 heads (the last layer is the model's own), pabee L."""
    import torch

    layers, hidden, labels = depth(model.config), hidden_size(model.config), \
        int(model.config.num_labels)
    if folder and os.path.exists(os.path.join(folder, FARM_WEIGHTS)):
        state = _torch_load(os.path.join(folder, FARM_WEIGHTS))
        heads = new_heads(hidden, labels, layers - 1)
        heads.load_state_dict(state)
        return "farm", heads
    state = _checkpoint_state(folder) if folder else {}
    highway = next((k[:k.index(_DEEBERT) + len(_DEEBERT)] for k in state if _DEEBERT in k), None)
    if highway is not None:  # bert.encoder.highway. (DeeRoBERTa: roberta.encoder.highway.)
        heads = new_heads(hidden, labels, layers - 1)
        heads.load_state_dict(dict((k[len(highway):], v) for k, v in state.items()
                                   if k.startswith(highway)
                                   and int(k[len(highway):].split(".")[0]) < layers - 1))
        return "deebert", heads
    if any(k.startswith(_PABEE) for k in state):
        Head, Pooler = _head_class()
        pooler = Pooler(shared_pooler(model))  # shared: one module, every head uses it
        heads = torch.nn.ModuleList([Head(pooler, torch.nn.Linear(hidden, labels))
                                     for _ in range(layers)])
        for i, head in enumerate(heads):
            head.classifier.weight.data.copy_(state["%s%d.weight" % (_PABEE, i)])
            head.classifier.bias.data.copy_(state["%s%d.bias" % (_PABEE, i)])
        return "pabee", heads
    return None, None


def shared_pooler(model):
    """The dense Linear of the model's own pooler (BERT: bert.pooler.dense; ALBERT: its
    albert.pooler is the Linear itself), which PABEE's classifiers share."""
    pooler = getattr(getattr(model, model.base_model_prefix), "pooler", None)
    if pooler is None:
        raise ExitError("PABEE's classifiers read the model's pooler, and %s has none"
                        % model.config.model_type)
    return getattr(pooler, "dense", pooler)


def save_farm_heads(folder, heads, meta):
    """farm's own layout: exit_heads.bin and exit_heads.json beside a save_pretrained model."""
    import torch

    torch.save(dict((k, v.detach().cpu().contiguous()) for k, v in heads.state_dict().items()),
               os.path.join(folder, FARM_WEIGHTS))
    with open(os.path.join(folder, FARM_META), "w") as f:
        json.dump(dict(meta, format=FARM_FORMAT, heads=len(heads)), f, indent=2, sort_keys=True)


def _torch_load(path):
    import inspect

    import torch

    safe = {"weights_only": True} if "weights_only" in inspect.signature(
        torch.load).parameters else {}
    return torch.load(path, map_location="cpu", **safe)


def _checkpoint_state(folder):
    from agents import models

    try:
        return models._checkpoint_state({"path": folder})
    except models.ModelError:
        return {}


def attach(model, params, folder):
    """Give `model` its exit heads (read from `folder`, or random for exit_at on a model with
    none) and the policy, as a submodule and attributes that survive quantization's copy."""
    if int(model.config.num_labels) == 1 and params.get("policy") != "exit_at":
        raise ExitError("a regression head (one output) has no class confidence for %s"
                        % params.get("policy"))
    layout, heads = read_heads(model, folder)
    if heads is None:
        if params.get("policy") != "exit_at":
            raise ExitError("%s has no exit heads (DeeBERT, PABEE or farm's layout)"
                            % (folder or "a catalog model"))
        layout = "random"
        heads = new_heads(hidden_size(model.config), int(model.config.num_labels),
                          depth(model.config) - 1, seed=RANDOM_SEED)
    model.add_module("farm_exit_heads", heads.eval())
    model.farm_exits = {"layout": layout, "params": dict(params)}
    return layout


def skeleton(model, params, layout):
    """Empty heads of `layout` on `model` (a streamed model's, whose resident weights then fill
    them): as attach() leaves them, with PABEE's pooler shared with the model's own."""
    import torch

    hidden, labels, layers = hidden_size(model.config), int(model.config.num_labels), \
        depth(model.config)
    if layout == "pabee":
        Head, Pooler = _head_class()
        pooler = Pooler(shared_pooler(model))
        heads = torch.nn.ModuleList([Head(pooler, torch.nn.Linear(hidden, labels))
                                     for _ in range(layers)])
    else:
        heads = new_heads(hidden, labels, layers - 1)
    model.add_module("farm_exit_heads", heads.eval())
    model.farm_exits = {"layout": layout, "params": dict(params)}


# -- policies ------------------------------------------------------------------------------------
def entropy(logits):
    """Entropy (nats) of each row's softmax."""
    import torch

    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -(log_probs.exp() * log_probs).sum(-1)


class Policy(object):
    """Which examples exit at a layer, given that layer's head outputs."""

    def __init__(self, params, layers):
        self.kind = params.get("policy", "full")
        self.value = params.get(self.kind) if self.kind in ("patience", "exit_at") \
            else params.get("threshold")
        self.layers = layers
        self.previous, self.counter = None, None

    def needs_head(self, layer):
        if self.kind == "full":
            return False
        if self.kind == "exit_at":
            return layer == self.value
        return True

    def exits(self, layer, logits):
        """A list of booleans: which rows exit at this layer (1-based)."""
        import torch

        rows = logits.shape[0]
        if self.kind == "exit_at":
            return [True] * rows
        if self.kind == "entropy":
            return [bool(x) for x in (entropy(logits) < self.value).tolist()]
        if self.kind == "confidence":
            top = torch.softmax(logits.float(), dim=-1).max(-1)[0]
            return [bool(x) for x in (top > self.value).tolist()]
        guess = logits.argmax(-1).tolist()  # patience
        if self.previous is None:
            self.counter = [0] * rows
        else:
            self.counter = [c + 1 if g == p else 0
                            for c, g, p in zip(self.counter, guess, self.previous)]
        self.previous = guess
        return [c >= self.value for c in self.counter]


# -- a pass ----------------------------------------------------------------------------------------
class Runner(object):
    """Runs a model that carries exit heads (attach) with a policy, one batch at a time."""

    def __init__(self, model):
        from agents.layers import layer_list

        self.model = model
        self.heads = model.farm_exit_heads
        self.layout = model.farm_exits["layout"]
        self.params = model.farm_exits["params"]
        self.layers = depth(model.config)
        self.units = [m for m in layer_list(model)[1]]
        self.own_head = self.layout != "pabee"  # the last layer exits through the model's head

    def head(self, layer):
        return self.heads[layer - 1]

    def run(self, inputs, params=None):
        """(logits, exit layer of each example, layers the pass ran)."""
        policy = Policy(self.params if params is None else params, self.layers)
        state = {"layer": 0, "exited": None, "logits": None}

        def after_layer(_module, _args, output):
            state["layer"] += 1
            layer = state["layer"]
            last = layer == self.layers
            if (last and self.own_head) or not (policy.needs_head(layer) or last):
                return
            hidden = output[0] if isinstance(output, tuple) else output
            logits = self.head(layer)(hidden)
            if state["exited"] is None:
                state["exited"] = [None] * logits.shape[0]
                state["logits"] = [None] * logits.shape[0]
            decided = policy.exits(layer, logits) if not last else [True] * logits.shape[0]
            for row, leaves in enumerate(decided):
                if leaves and state["exited"][row] is None:
                    state["exited"][row], state["logits"][row] = layer, logits[row]
            if all(x is not None for x in state["exited"]):
                raise _Stop()

        hooks = [unit.register_forward_hook(after_layer) for unit in self.units]
        final = None
        try:
            final = self.model(**inputs)[0]
        except _Stop:
            pass
        finally:
            for hook in hooks:
                hook.remove()
        return self._gathered(state, final)

    def _gathered(self, state, final):
        import torch

        if state["exited"] is None:  # nothing exited early: the model's own output
            return final, [self.layers] * final.shape[0], state["layer"]
        rows = []
        for row, layer in enumerate(state["exited"]):
            if layer is None:
                state["exited"][row] = self.layers
                rows.append(final[row])
            else:
                rows.append(state["logits"][row])
        return torch.stack(rows), state["exited"], state["layer"]


def percentiles(values, qs):
    from agents.measure import percentile

    ordered = sorted(values)
    return [percentile(ordered, q) for q in qs]


def histogram(layers, depth_):
    counts = [0] * depth_
    for layer in layers:
        counts[int(layer) - 1] += 1
    return counts


def mean(values):
    values = list(values)
    return float(sum(values)) / len(values) if values else None
