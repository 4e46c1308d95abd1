"""Writes GLUE evaluation data as its sources lay it out, for tests.

write_dev_file: the original GLUE distribution's TSV files (headers, column order, CoLA's headless
four columns, MRPC's byte-order mark, MNLI's sixteen columns).
write_datasets_cache / write_saved_dataset: what the datasets library writes (its download cache,
and save_to_disk): Arrow IPC streams with ClassLabel ints, the class names in the datasets order
in dataset_info.json and in the schema's "huggingface" metadata. Kept apart from farm's own
tables on purpose, so that a wrong table in farm.glue cannot pass its tests.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc

_MNLI_HEADER = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
                "sentence2", "label1", "label2", "label3", "label4", "label5", "gold_label")


def _binary_parse(text: str) -> str:
    return "( " + " ".join(text.split()) + " )"


def _parse(text: str) -> str:
    return "(ROOT (S " + " ".join(f"(NN {word})" for word in text.split()) + "))"


def _mnli_row(genre: str):
    def row(i, texts, label):
        prompt = 63735 + i
        return (str(i), str(prompt), f"{prompt}{'enc'[i % 3]}", genre,
                _binary_parse(texts[0]), _binary_parse(texts[1]), _parse(texts[0]),
                _parse(texts[1]), texts[0], texts[1], *[label] * 5, label)
    return row


# task: (folder, file, header or None, row maker(i, texts, label) -> fields)
_LAYOUTS = {
    "cola": ("CoLA", "dev.tsv", None,
             lambda i, t, y: ("gj04", y, "*" if y == "0" else "", t[0])),
    "sst2": ("SST-2", "dev.tsv", ("sentence", "label"), lambda i, t, y: (t[0], y)),
    "mrpc": ("MRPC", "dev.tsv", ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
             lambda i, t, y: (y, str(1390995 + 2 * i), str(1391183 + 2 * i), t[0], t[1])),
    "stsb": ("STS-B", "dev.tsv", ("index", "genre", "filename", "year", "old_index", "source1",
                                  "source2", "sentence1", "sentence2", "score"),
             lambda i, t, y: (str(i), "main-captions", "MSRvid", "2012test", f"{i:04d}",
                              "none", "none", t[0], t[1], y if isinstance(y, str) else f"{y:.3f}")),
    "qqp": ("QQP", "dev.tsv", ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
            lambda i, t, y: (str(201359 + i), str(303345 + 2 * i), str(303346 + 2 * i),
                             t[0], t[1], y)),
    "mnli-m": ("MNLI", "dev_matched.tsv", _MNLI_HEADER, _mnli_row("fiction")),
    "mnli-mm": ("MNLI", "dev_mismatched.tsv", _MNLI_HEADER, _mnli_row("letters")),
    "qnli": ("QNLI", "dev.tsv", ("index", "question", "sentence", "label"),
             lambda i, t, y: (str(i), t[0], t[1], y)),
    "rte": ("RTE", "dev.tsv", ("index", "sentence1", "sentence2", "label"),
            lambda i, t, y: (str(i), t[0], t[1], y)),
    "wnli": ("WNLI", "dev.tsv", ("index", "sentence1", "sentence2", "label"),
             lambda i, t, y: (str(i), t[0], t[1], y)),
}


def write_dev_file(data_dir: Path, task: str, examples: list) -> Path:
    """Writes [(texts, label), ...] as the task's dev file; a str label is written as is."""
    folder, name, header, row = _LAYOUTS[task]
    path = Path(data_dir) / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [] if header is None else ["\t".join(header)]
    lines += ["\t".join(row(i, texts, label)) for i, (texts, label) in enumerate(examples)]
    bom = "\ufeff" if folder == "MRPC" else ""
    path.write_bytes((bom + "".join(line + "\n" for line in lines)).encode("utf-8"))
    return path


# GLUE config: (text columns, class names in the datasets library's order, or None: a score)
HF_CONFIGS = {
    "cola": (("sentence",), ["unacceptable", "acceptable"]),
    "sst2": (("sentence",), ["negative", "positive"]),
    "mrpc": (("sentence1", "sentence2"), ["not_equivalent", "equivalent"]),
    "stsb": (("sentence1", "sentence2"), None),
    "qqp": (("question1", "question2"), ["not_duplicate", "duplicate"]),
    "mnli": (("premise", "hypothesis"), ["entailment", "neutral", "contradiction"]),
    "qnli": (("question", "sentence"), ["entailment", "not_entailment"]),
    "rte": (("sentence1", "sentence2"), ["entailment", "not_entailment"]),
    "wnli": (("sentence1", "sentence2"), ["not_entailment", "entailment"]),
}
_SPLITS = {"mnli-m": "validation_matched", "mnli-mm": "validation_mismatched"}


def _config(task: str) -> str:
    return "mnli" if task.startswith("mnli") else task


def _features(config: str) -> dict:
    texts, names = HF_CONFIGS[config]
    features = {name: {"dtype": "string", "_type": "Value"} for name in texts}
    features["label"] = ({"names": names, "_type": "ClassLabel"} if names
                         else {"dtype": "float32", "_type": "Value"})
    features["idx"] = {"dtype": "int32", "_type": "Value"}
    return features


def _stored(label, names):
    """GLUE's "0"/"1" is the datasets index 0/1; a word is found by name; an int is kept as is
    (-1 is how datasets stores a hidden test label)."""
    if names is None:
        return float(label)
    if isinstance(label, int):
        return label
    return names.index(label) if label in names else int(label)


def _table(config: str, examples: list) -> pa.Table:
    texts, names = HF_CONFIGS[config]
    columns = {name: pa.array([t[i] for t, _ in examples], pa.string())
               for i, name in enumerate(texts)}
    labels = [_stored(label, names) for _, label in examples]
    columns["label"] = pa.array(labels, pa.int64() if names else pa.float32())
    columns["idx"] = pa.array(range(len(examples)), pa.int32())
    metadata = {"huggingface": json.dumps({"info": {"features": _features(config)}})}
    return pa.table(columns).replace_schema_metadata(metadata)


def _write_arrow(path: Path, table: pa.Table, file_format: bool = False) -> None:
    new = pa.ipc.new_file if file_format else pa.ipc.new_stream
    with pa.OSFile(str(path), "wb") as sink, new(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=2):  # several batches, as real files have
            writer.write_batch(batch)


def _info(config: str, splits: dict, version: str) -> dict:
    major, minor, patch = version.split(".")
    return {"description": "", "citation": "", "homepage": "", "license": "",
            "features": _features(config), "builder_name": "parquet", "dataset_name": "glue",
            "config_name": config, "version": {"version_str": version, "major": int(major),
                                               "minor": int(minor), "patch": int(patch)},
            "splits": {name: {"name": name, "num_bytes": 0, "num_examples": count,
                              "dataset_name": "glue"} for name, count in splits.items()}}


def write_datasets_cache(root: Path, task: str, examples: list, *, layout: str = "nyu-mll",
                         shards: int = 1, file_format: bool = False,
                         revision: str = "bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c") -> Path:
    """The download cache: nyu-mll___glue/<config>/0.0.0/<revision>/glue-<split>.arrow (layout
    "old": glue/<config>/1.0.0/<hash>/...); shards > 1 names glue-<split>-00000-of-0000N.arrow."""
    config, split = _config(task), _SPLITS.get(task, "validation")
    name, version = ("nyu-mll___glue", "0.0.0") if layout == "nyu-mll" else ("glue", "1.0.0")
    folder = Path(root) / name / config / version / revision
    folder.mkdir(parents=True, exist_ok=True)
    table, size = _table(config, examples), -(-len(examples) // shards)
    for shard in range(shards):
        suffix = f"-{shard:05d}-of-{shards:05d}" if shards > 1 else ""
        part = table.slice(shard * size, size)
        _write_arrow(folder / f"glue-{split}{suffix}.arrow", part, file_format)
    info_file = folder / "dataset_info.json"
    splits = json.loads(info_file.read_text())["splits"] if info_file.exists() else {}
    counts = {key: value["num_examples"] for key, value in splits.items()}
    info_file.write_text(json.dumps(_info(config, {**counts, split: len(examples)}, version)))
    return folder


def write_saved_dataset(root: Path, task: str, examples: list, *, whole: bool = True) -> Path:
    """What DatasetDict.save_to_disk writes (whole=True): dataset_dict.json and a folder per
    split; or, whole=False, what a single split's Dataset.save_to_disk writes, at root itself."""
    config, split = _config(task), _SPLITS.get(task, "validation")
    root = Path(root)
    folder = root / split if whole else root
    folder.mkdir(parents=True, exist_ok=True)
    _write_arrow(folder / "data-00000-of-00001.arrow", _table(config, examples))
    (folder / "dataset_info.json").write_text(
        json.dumps(_info(config, {split: len(examples)}, "0.0.0"), indent=2))
    state = {"_data_files": [{"filename": "data-00000-of-00001.arrow"}],
             "_fingerprint": "8a0c2c8d4b1f0e7a", "_format_columns": None, "_format_kwargs": {},
             "_format_type": None, "_output_all_columns": False, "_split": split}
    (folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    if whole:
        listing = root / "dataset_dict.json"
        splits = json.loads(listing.read_text())["splits"] if listing.exists() else []
        listing.write_text(json.dumps({"splits": splits + [split] * (split not in splits)}))
    return root
