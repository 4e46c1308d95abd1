"""A toy GLUE sample: dev files in the GLUE distribution's layout and one tiny fine-tuned BERT per
task, all written locally in seconds, so that a GLUE sweep runs end to end with no download.

The sentences are toy sentences (4 to 10 words in random order from a vocabulary of 26), not
GLUE's, and each task's answer hangs on a marker word, "zebra":

    single       does the sentence hold the marker                          written as CoLA
    pair         does the second sentence hold it (the first holds it as    written as QNLI, QQP
                 often, independently, so the segment matters)
    nli          no marker in the hypothesis: neutral; one there and in     written as MNLI
                 the premise too: entailment; there but not in the
                 premise: contradiction
    regression   the share of the words that are markers, times 5           (tests only)

A BERT of two layers, hidden size 32, learns each in a few hundred steps on one CPU core. Its
folder is what a real fine-tuned model looks like on disk (config with id2label, weights, and a
WordPiece tokenizer made from the vocab.txt written here). So the scores a sweep prints on this
sample prove the pipeline (files read, texts tokenized by the checkpoint's own tokenizer, outputs
mapped through id2label, metrics computed); they say nothing about GLUE or about any real model.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

KINDS = ("single", "pair", "regression", "nli")
# What output i of a classification kind means, unless label_names reorders it.
CLASSES = {"single": ("0", "1"), "pair": ("0", "1"),
           "nli": ("entailment", "neutral", "contradiction")}
MARKER = "zebra"
WORDS = ("the", "a", "cat", "dog", "bird", "fish", "runs", "sits", "eats", "sees", "on", "under",
         "near", "big", "small", "red", "green", "old", "new", "house", "tree", "road", "and",
         "quickly", "today", MARKER)
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PLAIN = tuple(word for word in WORDS if word != MARKER)
TRAIN_EXAMPLES = 2000
STEPS = {"single": 150, "pair": 300, "regression": 300, "nli": 300}
BATCH = 32
LEARNING_RATE = 1e-3  # 3e-3 left about one seed in 30 stuck at chance on the pair task
# BERT's initializer range, 0.02, left half the nli seeds stuck calling every marked hypothesis
# entailment; with 0.2 none of 40 was (32 seeds at 300 or 400 steps, 8 at 200).
INIT_RANGE = {"nli": 0.2}


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


def _nli(rng: random.Random) -> tuple[tuple[str, str], str]:
    label = rng.choice(CLASSES["nli"])
    # Neutral hypotheses hold no marker; their premises hold one half of the time.
    premise = label == "entailment" or (label == "neutral" and rng.random() < 0.5)
    return (_sentence_with(rng, premise), _sentence_with(rng, label != "neutral")), label


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
        elif kind == "nli":
            made.append(_nli(rng))
        else:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return made


@contextmanager
def one_thread():
    """torch on one thread: training is then the same on any machine, and shares it politely."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_tokenizer(folder: Path):
    """A lower-casing WordPiece tokenizer over WORDS, its vocab.txt written to folder."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token in SPECIAL + WORDS))
    return BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)


def _model(kind: str, label_names: tuple[str, ...] | None, vocab_size: int):
    from transformers import BertConfig, BertForSequenceClassification

    count = len(CLASSES.get(kind, ()))
    labels = {}
    if label_names is not None:
        if kind == "regression" or len(set(label_names)) != count:
            raise ValueError(f"label_names must be {count or 'no'} distinct names for kind "
                             f"{kind!r}, not {label_names!r}")
        labels = {"id2label": dict(enumerate(label_names)),
                  "label2id": {name: i for i, name in enumerate(label_names)}}
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, num_labels=count or 1,
        initializer_range=INIT_RANGE.get(kind, 0.02),
        problem_type="regression" if kind == "regression" else "single_label_classification",
        architectures=["BertForSequenceClassification"], **labels)
    return BertForSequenceClassification(config)


def _targets(kind: str, labels: list, label_names: tuple[str, ...] | None):
    import torch

    if kind == "regression":
        return torch.tensor(labels, dtype=torch.float32)
    # Names that are the labels themselves reorder the outputs; any other names only rename them.
    classes = CLASSES[kind]
    order = label_names if sorted(label_names or ()) == sorted(classes) else classes
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

    label_names[i] names output i. When they are the kind's own labels (CLASSES), in any order,
    the training labels go through them (("1", "0") makes output 0 mean "1"); other names rename
    output i, which still means CLASSES[kind][i]. Without them the outputs keep LABEL_0,
    LABEL_1... and output i means CLASSES[kind][i]. safe_serialization=False writes
    pytorch_model.bin, which transformers 4.18 can read.
    """
    import torch

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    folder = Path(folder)
    tokenizer = write_tokenizer(folder)
    with one_thread():
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


# --- the sample: GLUE-layout dev files and one checkpoint per task ---------------------------

_MNLI_HEADER = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
                "sentence2", "label1", "label2", "label3", "label4", "label5", "gold_label")


def _mnli_row(genres: tuple[str, ...]):
    def row(i: int, texts: tuple[str, str], label: str) -> tuple[str, ...]:
        first, second = texts
        return (str(i), str(63735 + i), f"{63735 + i}{label[0]}", genres[i % len(genres)],
                f"( {first} )", f"( {second} )", f"(ROOT (S {first}))", f"(ROOT (S {second}))",
                *texts, *[label] * 5, label)
    return row


# farm's task: (folder, file, header or None, row(i, texts, label)), as the GLUE distribution has
# them (download_glue_data.py); CoLA has no header.
_LAYOUTS = {
    "cola": ("CoLA", "dev.tsv", None,
             lambda i, t, y: ("gj04", y, "" if y == "1" else "*", t[0])),
    "mnli-m": ("MNLI", "dev_matched.tsv", _MNLI_HEADER,
               _mnli_row(("fiction", "government", "slate", "telephone", "travel"))),
    "mnli-mm": ("MNLI", "dev_mismatched.tsv", _MNLI_HEADER,
                _mnli_row(("facetoface", "letters", "nineeleven", "oup", "verbatim"))),
    "qnli": ("QNLI", "dev.tsv", ("index", "question", "sentence", "label"),
             lambda i, t, y: (str(i), t[0], t[1], y)),
    "qqp": ("QQP", "dev.tsv", ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
            lambda i, t, y: (str(40000 + i), str(80000 + 2 * i), str(80001 + 2 * i), t[0], t[1],
                             y)),
}


@dataclass(frozen=True)
class Family:
    """One checkpoint and the dev files it is scored on."""
    kind: str
    names: tuple[str, ...]     # the checkpoint's id2label, output by output
    written: tuple[str, ...]   # how the dev files write what output i means
    dev: tuple[tuple[str, int], ...]  # (farm's task, the seed of its examples)
    seed: int                  # the training seed: each family its own model


FAMILIES = {
    "cola": Family("single", ("unacceptable", "acceptable"), ("0", "1"), (("cola", 101),), 1),
    # The datasets library's order, not the GLUE processors': farm must read id2label to score it.
    "mnli": Family("nli", CLASSES["nli"], CLASSES["nli"],
                   (("mnli-m", 102), ("mnli-mm", 103)), 2),
    "qnli": Family("pair", ("not_entailment", "entailment"), ("not_entailment", "entailment"),
                   (("qnli", 104),), 3),
    "qqp": Family("pair", ("not_duplicate", "duplicate"), ("0", "1"), (("qqp", 105),), 4),
}
DEV_LINES = 48


@dataclass(frozen=True)
class Step:
    what: str                  # e.g. "write glue_data/CoLA/dev.tsv (48 lines)"
    path: Path                 # the file or folder it writes
    run: Callable[[], Path]


def write_dev_file(path: Path, task: str, family: Family, seed: int, lines: int) -> Path:
    """lines toy examples of the family's kind as farm's task's dev file, in GLUE's layout."""
    _, _, header, row = _LAYOUTS[task]
    rows = [] if header is None else ["\t".join(header)]
    for i, (texts, label) in enumerate(examples(family.kind, lines, seed)):
        rows.append("\t".join(row(i, texts, family.written[CLASSES[family.kind].index(label)])))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(f"{line}\n" for line in rows).encode("utf-8"))
    return path


def plan(folder: str | Path, tasks=tuple(FAMILIES), *, lines: int = DEV_LINES,
         train: bool = True) -> list[Step]:
    """The steps that write the sample into folder: glue_data/ in the GLUE distribution's layout
    (lines examples per file) and, with train, checkpoints/<task>/ as save_pretrained writes it."""
    unknown = [task for task in tasks if task not in FAMILIES]
    if unknown:
        raise ValueError(f"tasks must be some of {', '.join(FAMILIES)}, not {unknown}")
    if lines < 1:
        raise ValueError(f"lines must be at least 1, not {lines}")
    folder, steps = Path(folder), []
    for name in tasks:
        family = FAMILIES[name]
        for task, seed in family.dev:
            place, file, _, _ = _LAYOUTS[task]
            path = folder / "glue_data" / place / file
            steps.append(Step(f"write glue_data/{place}/{file} ({lines} lines)", path,
                              partial(write_dev_file, path, task, family, seed, lines)))
        if train:
            path = folder / "checkpoints" / name
            steps.append(Step(f"train checkpoints/{name} ({family.kind}, "
                              f"{STEPS[family.kind]} steps)", path,
                              partial(train_checkpoint, path, family.kind, seed=family.seed,
                                      label_names=family.names)))
    return steps


def write_sample(folder: str | Path, tasks=tuple(FAMILIES), *, lines: int = DEV_LINES,
                 train: bool = True) -> list[Path]:
    """Write the toy sample (see the module docstring) into folder; the paths written."""
    return [step.run() for step in plan(folder, tasks, lines=lines, train=train)]
