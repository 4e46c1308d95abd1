"""Tiny BERTs with an exit after every layer, trained inside a test, saved in the layouts of
DeeBERT (highways in the model's own weights), PABEE (`classifiers.{i}` over the shared pooler)
and farm (save_pretrained plus exit_heads.bin), and a reference early exit computed here from the
saved tensors alone, so that agents/exits.py is checked against arithmetic it does not share.

The task is glue_checkpoints' "single" (does the sentence hold the marker word), written as
SST-2; backbone, final head and every exit are trained together (the sum of their losses, as
PABEE does), so that early exits are good but not all equally sure.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from glue_checkpoints import _one_thread, _tokenizer, examples

KIND = "single"  # glue_checkpoints: does the sentence hold the marker word
LAYERS, HIDDEN, HEADS, FFN, LABELS = 4, 32, 2, 64, 2
STEPS, BATCH, LEARNING_RATE = 40, 32, 1e-3


def config(vocab_size: int, layers: int = LAYERS):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=layers,
                      num_attention_heads=HEADS, intermediate_size=FFN,
                      max_position_embeddings=64, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, num_labels=LABELS,
                      architectures=["BertForSequenceClassification"])


class Trained:
    """A backbone with its own head, DeeBERT-shaped highways (one per layer) and PABEE
    classifiers (one per layer, over the backbone's pooler), trained jointly."""

    def __init__(self, folder: Path, seed: int = 0, steps: int = STEPS):
        import torch
        from transformers import BertForSequenceClassification

        self.tokenizer = _tokenizer(Path(folder))
        with _one_thread():
            torch.manual_seed(seed)
            self.model = BertForSequenceClassification(config(len(self.tokenizer)))
            self.highways = torch.nn.ModuleList([torch.nn.ModuleDict({
                "dense": torch.nn.Linear(HIDDEN, HIDDEN),
                "classifier": torch.nn.Linear(HIDDEN, LABELS)}) for _ in range(LAYERS)])
            self.classifiers = torch.nn.ModuleList([torch.nn.Linear(HIDDEN, LABELS)
                                                    for _ in range(LAYERS)])
            self._train(seed, steps)

    def _train(self, seed: int, steps: int) -> None:
        import torch

        data = examples(KIND, 2000, seed)
        encoded = self.tokenizer(*[list(c) for c in zip(*(t for t, _ in data))], padding=True,
                                 return_tensors="pt")
        targets = torch.tensor([int(label) for _, label in data])
        parts = [self.model, self.highways, self.classifiers]
        optimizer = torch.optim.Adam([p for part in parts for p in part.parameters()],
                                     lr=LEARNING_RATE)
        order = torch.Generator().manual_seed(seed)
        for part in parts:
            part.train()
        for _ in range(steps):
            batch = torch.randint(len(data), (BATCH,), generator=order)
            out = self.model(**{k: v[batch] for k, v in encoded.items()},
                             output_hidden_states=True)
            loss = torch.nn.functional.cross_entropy(out.logits, targets[batch])
            for i in range(LAYERS):
                hidden = out.hidden_states[i + 1][:, 0]
                highway = self.highways[i]
                loss = loss + torch.nn.functional.cross_entropy(
                    highway["classifier"](torch.tanh(highway["dense"](hidden))), targets[batch])
                pooled = self.model.bert.pooler(out.hidden_states[i + 1])
                loss = loss + torch.nn.functional.cross_entropy(self.classifiers[i](pooled),
                                                                targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for part in parts:
            part.eval()

    def save(self, folder: Path, layout: str) -> Path:
        """The checkpoint in `layout`: deebert, pabee, farm, or plain (no exits)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(folder))
        self.model.save_pretrained(str(folder))
        state = {k: v.detach().clone().contiguous() for k, v in self.model.state_dict().items()}
        if layout == "deebert":
            for i, highway in enumerate(self.highways):
                for part, name in (("dense", "pooler.dense"), ("classifier", "classifier")):
                    for kind in ("weight", "bias"):
                        state[f"bert.encoder.highway.{i}.{name}.{kind}"] = \
                            getattr(highway[part], kind).detach().clone()
        elif layout == "pabee":
            del state["classifier.weight"], state["classifier.bias"]
            for i, classifier in enumerate(self.classifiers):
                state[f"classifiers.{i}.weight"] = classifier.weight.detach().clone()
                state[f"classifiers.{i}.bias"] = classifier.bias.detach().clone()
        elif layout == "farm":
            self._save_farm_heads(folder)
        if layout in ("deebert", "pabee"):
            save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder

    def _save_farm_heads(self, folder: Path) -> None:
        import torch

        heads = {}
        for i, highway in enumerate(self.highways[:-1]):
            for part, name in (("dense", "pooler.dense"), ("classifier", "classifier")):
                for kind in ("weight", "bias"):
                    heads[f"{i}.{name}.{kind}"] = getattr(highway[part], kind).detach().clone()
        torch.save(heads, folder / "exit_heads.bin")
        (folder / "exit_heads.json").write_text(json.dumps({"format": 1, "heads": LAYERS - 1}))


# -- the reference ---------------------------------------------------------------------------
def layer_outputs(folder: Path, layout: str,
                  texts: list[tuple[str, ...]]) -> list[list[list[float]]]:
    """Each example's logits after every layer 1..L, from the saved tensors: tanh(W h + b) then
    the classifier for DeeBERT's and farm's highways (the model's own pooler and classifier at
    layer L); the shared pooler then classifiers.{i} for PABEE. Each example alone, unpadded."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertModel

    state = load_file(str(folder / "model.safetensors"))
    if layout == "farm":
        state.update({f"bert.encoder.highway.{k}": v for k, v in
                      torch.load(folder / "exit_heads.bin").items()})
    bert = BertModel.from_pretrained(str(folder)).eval()  # the backbone's own weights
    tokenizer = AutoTokenizer.from_pretrained(str(folder))

    def dense(prefix, x):
        return x @ state[prefix + ".weight"].T + state[prefix + ".bias"]

    made = []
    with torch.no_grad():
        for example in texts:
            hidden = bert(**tokenizer(*[[t] for t in example], return_tensors="pt"),
                          output_hidden_states=True).hidden_states
            per_layer = []
            for i in range(1, LAYERS + 1):
                first = hidden[i][0, 0]
                if layout == "pabee":
                    pooled = torch.tanh(dense("bert.pooler.dense", first))
                    logits = dense(f"classifiers.{i - 1}", pooled)
                elif i == LAYERS:
                    logits = dense("classifier", torch.tanh(dense("bert.pooler.dense", first)))
                else:
                    highway = f"bert.encoder.highway.{i - 1}"
                    logits = dense(highway + ".classifier",
                                   torch.tanh(dense(highway + ".pooler.dense", first)))
                per_layer.append(logits.tolist())
            made.append(per_layer)
    return made


def reference_exit(per_layer: list[list[float]], policy: str, value) -> int:
    """The layer (1-based) an example exits at, from its logits after every layer."""
    def probabilities(logits):
        top = max(logits)
        exps = [math.exp(x - top) for x in logits]
        return [e / sum(exps) for e in exps]

    streak, previous = 0, None
    for i, logits in enumerate(per_layer, start=1):
        if policy == "exit_at" and i == value:
            return i
        p = probabilities(logits)
        if policy == "entropy" and -sum(x * math.log(x) for x in p if x > 0) < value:
            return i
        if policy == "confidence" and max(p) > value:
            return i
        if policy == "patience":
            guess = logits.index(max(logits))
            streak = streak + 1 if guess == previous else 0
            previous = guess
            if streak >= value:
                return i
    return len(per_layer)
