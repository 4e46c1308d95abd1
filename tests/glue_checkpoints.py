"""Fine-tuned GLUE-style checkpoints made inside a test, in a few seconds on one CPU core.

A tiny BERT learns one of three toy tasks whose answer hangs on a marker word: does a sentence
hold it (single), does the second sentence of a pair hold it (pair, so the segment matters), what
share of the words are markers (regression). The folder it writes is what a real fine-tuned model
looks like on disk: config, weights, and a WordPiece tokenizer made from a vocab.txt written here,
so that farm's loading path runs for real on a model nobody has seen before.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from pathlib import Path

KINDS = ("single", "pair", "regression")
MARKER = "zebra"
WORDS = ("the", "a", "cat", "dog", "bird", "fish", "runs", "sits", "eats", "sees", "on", "under",
         "near", "big", "small", "red", "green", "old", "new", "house", "tree", "road", "and",
         "quickly", "today", MARKER)
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PLAIN = tuple(word for word in WORDS if word != MARKER)
TRAIN_EXAMPLES = 2000
STEPS = {"single": 150, "pair": 300, "regression": 300}
BATCH = 32
LEARNING_RATE = 1e-3  # 3e-3 left about one seed in 30 stuck at chance on the pair task


def _sentence(rng: random.Random, marker_share: float) -> list[str]:
    return [MARKER if rng.random() < marker_share else rng.choice(PLAIN)
            for _ in range(rng.randint(4, 10))]


def _sentence_with(rng: random.Random, marked: bool) -> str:
    words = _sentence(rng, 0.0)
    if marked:
        # One to three markers at random places, so that position cannot stand in for the word.
        for _ in range(rng.randint(1, 3)):
            words[rng.randrange(len(words))] = MARKER
    return " ".join(words)


def examples(kind: str, n: int, seed: int) -> list[tuple[tuple[str, ...], object]]:
    """n generated examples (texts, label); see the module docstring for the tasks."""
    rng = random.Random(f"{kind}-{seed}")
    made = []
    for _ in range(n):
        if kind == "single":
            positive = rng.random() < 0.5
            made.append(((_sentence_with(rng, positive),), "1" if positive else "0"))
        elif kind == "pair":
            # The first sentence holds the marker as often as the second, and independently of it.
            first, second = rng.random() < 0.5, rng.random() < 0.5
            texts = (_sentence_with(rng, first), _sentence_with(rng, second))
            made.append((texts, "1" if second else "0"))
        elif kind == "regression":
            share = rng.random()
            first, second = _sentence(rng, share), _sentence(rng, share)
            both = first + second
            made.append(((" ".join(first), " ".join(second)),
                         round(5 * both.count(MARKER) / len(both), 3)))
        else:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return made


@contextmanager
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token in SPECIAL + WORDS))
    return BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)


def _model(kind: str, label_names: tuple[str, ...] | None, vocab_size: int):
    from transformers import BertConfig, BertForSequenceClassification

    labels = {}
    if label_names is not None:
        if kind == "regression" or len(set(label_names)) != 2:
            raise ValueError(f"label_names must be two distinct names for a classification kind, "
                             f"not {label_names!r} for {kind!r}")
        labels = {"id2label": dict(enumerate(label_names)),
                  "label2id": {name: i for i, name in enumerate(label_names)}}
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, num_labels=1 if kind == "regression" else 2,
        problem_type="regression" if kind == "regression" else "single_label_classification",
        architectures=["BertForSequenceClassification"], **labels)
    return BertForSequenceClassification(config)


def _targets(kind: str, labels: list, label_names: tuple[str, ...] | None):
    import torch

    if kind == "regression":
        return torch.tensor(labels, dtype=torch.float32)
    # Names that are the labels themselves reorder the outputs; any other names only rename them.
    order = label_names if sorted(label_names or ()) == ["0", "1"] else ("0", "1")
    return torch.tensor([order.index(label) for label in labels])


def _train(model, tokenizer, kind: str, seed: int, steps: int, label_names) -> None:
    import torch

    data = examples(kind, TRAIN_EXAMPLES, seed)
    texts = [list(column) for column in zip(*(texts for texts, _ in data))]
    encoded = tokenizer(*texts, padding=True, return_tensors="pt")
    targets = _targets(kind, [label for _, label in data], label_names)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = torch.randint(len(data), (BATCH,), generator=order)
        loss = model(**{key: value[batch] for key, value in encoded.items()},
                     labels=targets[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def train_checkpoint(folder: Path, kind: str, *, seed: int = 0,
                     label_names: tuple[str, ...] | None = None,
                     safe_serialization: bool = True, steps: int | None = None) -> Path:
    """Train a tiny BERT on examples(kind) and save it with its tokenizer to folder.

    label_names[i] names output i, to test that a reader trusts the checkpoint's own label order:
    when they are "0" and "1" the training labels go through them (("1", "0") makes output 0 mean
    "1"); other names rename output i, which still means str(i). Without them the outputs keep
    LABEL_0/LABEL_1 and output i means str(i). safe_serialization=False writes
    pytorch_model.bin, which transformers 4.18 can read.
    """
    import torch

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    folder = Path(folder)
    tokenizer = _tokenizer(folder)
    with _one_thread():
        torch.manual_seed(seed)
        model = _model(kind, label_names, len(tokenizer))
        _train(model, tokenizer, kind, seed, steps or STEPS[kind], label_names)
    tokenizer.save_pretrained(str(folder))
    if safe_serialization:
        model.save_pretrained(str(folder))
    else:
        # transformers 5 writes only safetensors; this is the file older versions read instead.
        model.config.save_pretrained(str(folder))
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def _names(config) -> list[str] | None:
    names = [config.id2label[i] for i in range(config.num_labels)]
    return None if names == [f"LABEL_{i}" for i in range(config.num_labels)] else names


def predict(folder: Path, texts: list[tuple[str, ...]], max_length: int = 32) -> list:
    """Reference predictions straight from transformers: class names, or the regression float."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    columns = [list(column) for column in zip(*texts)]
    encoded = tokenizer(*columns, truncation=True, padding="max_length", max_length=max_length,
                        return_tensors="pt")
    with _one_thread(), torch.no_grad():
        logits = model(**encoded).logits
    if model.config.num_labels == 1:
        return [float(value) for value in logits[:, 0]]
    names = _names(model.config)
    return [names[i] if names else str(i) for i in logits.argmax(-1).tolist()]
