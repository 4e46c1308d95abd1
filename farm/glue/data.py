"""Reading a GLUE task's evaluation examples, from one of three places:

    the GLUE distribution     data_dir/CoLA/dev.tsv, data_dir/MNLI/dev_matched.tsv, ...
    a saved dataset           data_dir (or data_dir/<config>) written by the datasets library's
                              save_to_disk: dataset_dict.json, <split>/data-00000-of-00001.arrow,
                              <split>/dataset_info.json, <split>/state.json
    the datasets cache        when data_dir is None: $HF_DATASETS_CACHE, else $HF_HOME/datasets,
                              else ~/.cache/huggingface/datasets, holding
                              nyu-mll___glue/<config>/<version>/<hash>/glue-<split>.arrow
                              (older: glue/<config>/1.0.0/<hash>/...) beside dataset_info.json

The datasets library itself is not needed: its Arrow files are IPC streams that pyarrow reads, and
its class labels are ints whose names sit in dataset_info.json. Those names are mapped to GLUE's
labels by name (MNLI's order there is entailment, neutral, contradiction), never by position.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from farm.errors import ConfigError
from farm.glue.tasks import TASKS, Task, label_named

if TYPE_CHECKING:  # pyarrow is imported where a file is read: the readers never need it
    import pyarrow as pa


class DataError(ConfigError):
    """A task's examples are missing or malformed: names the file, line, column and the fix."""


@dataclass(frozen=True)
class Examples:
    task: Task
    source: str                         # the file, or the folder of Arrow files, read
    texts: tuple[tuple[str, ...], ...]  # one or two texts per example, in file order
    labels: tuple                       # one of task.labels, or a float for regression
    digest: str                         # 16 hex chars over the task name, texts and labels

    def __len__(self) -> int:
        return len(self.texts)


def read_examples(task: str | Task, data_dir: str | Path | None,
                  max_samples: int | None = None) -> Examples:
    """The task's evaluation examples in file order; max_samples keeps the first N."""
    task = _task(task, data_dir)
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be at least 1, not {max_samples}")
    if data_dir is None:
        source, texts, labels = _read_cache(task, max_samples)
    else:
        data_dir = Path(data_dir).expanduser()
        saved = _saved_split(task, data_dir)
        if saved is not None:
            source, texts, labels = _read_arrow(task, *saved, max_samples)
        else:
            source, texts, labels = _read_tsv(task, data_dir, max_samples)
    return Examples(task, source, texts, labels, _digest(task, texts, labels))


def _task(task: str | Task, data_dir) -> Task:
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise DataError(str(data_dir or "datasets cache"), "task", f"unknown GLUE task {task!r}",
                        f"use one of: {', '.join(TASKS)}")
    return TASKS[task]


def _digest(task: Task, texts: tuple, labels: tuple) -> str:
    payload = json.dumps([task.name, texts, labels], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


# --- the GLUE distribution's TSV files ------------------------------------------------------

_WHERE = "point data_dir: at the GLUE distribution (the folder holding CoLA/, MNLI/, ...)"


def _read_tsv(task: Task, data_dir: Path, limit: int | None):
    path = data_dir / task.folder / task.dev_file
    if not path.is_file():
        raise DataError(str(path), "(file)", f"no {task.folder}/{task.dev_file} under {data_dir}",
                        f"{_WHERE}, or at a folder written by datasets' save_to_disk")
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise DataError(str(path), "(file)", "the file is empty",
                        f"restore {task.folder}/{task.dev_file} from the GLUE distribution")
    if task.header:
        columns = _header_columns(task, path, first[1])
        width = len(first[1].split("\t"))
    else:
        lines = itertools.chain([first], lines)
        columns = [(f"column {i + 1}", i) for i in (*task.text_columns, task.label_column)]
        width = max(index for _, index in columns) + 1
    needed = max(index for _, index in columns) + 1
    texts, labels = [], []
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) < needed:
            missing = next(name for name, index in columns if index >= len(fields))
            raise DataError(str(path), missing, f"expected at least {needed} tab-separated "
                            f"columns, found {len(fields)}",
                            "repair or remove this line (tabs inside a text break the row)",
                            number)
        if len(fields) > width:  # a text's tab, or two rows joined by a lone \r line end
            raise DataError(str(path), "(line)", f"{len(fields)} tab-separated columns where "
                            f"the file has {width}", "repair this line: a tab inside a text, or "
                            "mixed line ends (convert them all to LF)", number)
        texts.append(tuple(fields[index] for _, index in columns[:-1]))
        labels.append(_tsv_label(task, fields[columns[-1][1]], str(path), columns[-1][0], number))
        if limit is not None and len(texts) >= limit:
            break
    if not texts:
        raise DataError(str(path), "(file)", "the file has a header but no examples",
                        f"restore {task.folder}/{task.dev_file} from the GLUE distribution", 1)
    return str(path), tuple(texts), tuple(labels)


def _lines(path: Path):
    """(line number, text) of each non-blank line. \\n ends a line (texts may hold a lone \\r),
    except in a file with no \\n at all, whose lines end with \\r (old Mac line ends)."""
    with path.open("rb") as handle:
        start = handle.read(64 * 1024)
        handle.seek(0)
        raws = handle if b"\n" in start or b"\r" not in start else \
            iter(handle.read().split(b"\r"))
        for number, raw in enumerate(raws, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(str(path), "(file)", f"not UTF-8 text (byte {error.start} of "
                                "the line)", "re-extract the file from the GLUE distribution",
                                number) from None
            if "\0" in line:
                raise DataError(str(path), "(file)", "a NUL byte in this line (not a text "
                                "file, or a damaged one)",
                                "re-extract the file from the GLUE distribution", number)
            # MRPC's files start with a byte-order mark, inherited from Microsoft's originals.
            line = (line.removeprefix("\ufeff") if number == 1 else line).rstrip("\r\n")
            if line.strip():
                yield number, line


def _header_columns(task: Task, path: Path, header: str) -> list[tuple[str, int]]:
    names = header.split("\t")
    columns = []
    for name in (*task.text_columns, task.label_column):
        if name not in names:
            raise DataError(str(path), name, f"no {name!r} column in the header "
                            f"(found: {', '.join(names)})",
                            f"use the original GLUE {task.folder}/{task.dev_file}", 1)
        columns.append((name, names.index(name)))
    return columns


def _tsv_label(task: Task, value: str, file: str, column: str, line: int):
    value = value.strip()
    if task.regression:
        try:
            score = float(value)
        except ValueError:
            score = float("nan")
        if not 0 <= score <= 5:  # also refuses nan and inf
            raise DataError(file, column, f"score {value!r} is not a number from 0 to 5",
                            "repair or remove this line", line)
        return score
    if value not in task.labels:
        raise DataError(file, column, f"label {value!r} is not one of {', '.join(task.labels)}",
                        f"check that this is the original GLUE {task.folder}/{task.dev_file}",
                        line)
    return value


# --- the datasets library's Arrow files -----------------------------------------------------

# Per GLUE config: the text columns (class names: farm.glue.tasks.CLASS_WORDS).
_HF_TEXTS = {"cola": ("sentence",), "sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"),
             "stsb": ("sentence1", "sentence2"), "qqp": ("question1", "question2"),
             "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"),
             "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2")}
_CACHE_NAMES = ("nyu-mll___glue", "glue")  # datasets >= 2.14 (the Hub's nyu-mll/glue); older


def _cache_root() -> Path:
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "datasets"


def _read_cache(task: Task, limit: int | None):
    root = _cache_root()
    found = []
    for name in _CACHE_NAMES:
        # A config folder is the config's name, or (datasets 2.14-2.15) that name with a hash.
        for config in sorted((root / name).glob(f"{task.hf_config}*")):
            if config.name == task.hf_config or config.name.startswith(task.hf_config + "-"):
                found += [folder for folder in config.glob("*/*") if _cached(folder, task)]
    if not found:
        raise DataError(str(root), "(cache)", f"no {task.name} data: looked for {root}/"
                        f"{{{','.join(_CACHE_NAMES)}}}/{task.hf_config}/*/*/"
                        f"glue-{task.hf_split}.arrow",
                        f"{_WHERE}; or copy a datasets cache that has loaded nyu-mll/glue "
                        f"{task.hf_config} here (or set HF_DATASETS_CACHE)")
    folder = max(found, key=lambda f: f.stat().st_mtime)  # the newest, as datasets picks
    return _read_arrow(task, folder, _cache_files(folder, task.hf_split), limit)


def _cached(folder: Path, task: Task) -> bool:
    return (folder.is_dir() and not folder.name.endswith(".incomplete")
            and (folder / "dataset_info.json").is_file()
            and bool(_cache_files(folder, task.hf_split)))


def _cache_files(folder: Path, split: str) -> list[Path]:
    single = folder / f"glue-{split}.arrow"
    return [single] if single.is_file() else sorted(folder.glob(f"glue-{split}-*-of-*.arrow"))


def _saved_split(task: Task, data_dir: Path) -> tuple[Path, list[Path]] | None:
    """The split folder and Arrow files of a save_to_disk folder for this task, or None."""
    for root in (data_dir, data_dir / task.hf_config):
        if (root / "dataset_dict.json").is_file():
            splits = _json(root / "dataset_dict.json").get("splits", [])
            if task.hf_split not in splits:
                raise DataError(str(root / "dataset_dict.json"), "splits",
                                f"no {task.hf_split} split (found: {', '.join(splits)})",
                                f"save the {task.hf_config} config's {task.hf_split} split there")
            return _saved_files(task, root / task.hf_split)
        if (root / "state.json").is_file() and (root / "dataset_info.json").is_file():
            split = _json(root / "state.json").get("_split")
            if split not in (None, task.hf_split):
                raise DataError(str(root / "state.json"), "_split", f"this saved dataset is "
                                f"the {split} split, not {task.hf_split}",
                                f"save the {task.hf_config} config's {task.hf_split} split there")
            return _saved_files(task, root)
    return None


def _saved_files(task: Task, folder: Path) -> tuple[Path, list[Path]]:
    state = _json(folder / "state.json") if (folder / "state.json").is_file() else {}
    files = [folder / entry["filename"] for entry in state.get("_data_files", [])]
    files = files or sorted(folder.glob("data-*.arrow"))
    if not files or not all(file.is_file() for file in files):
        raise DataError(str(folder), "(file)", "no Arrow data files (data-*.arrow) in this split",
                        "save the dataset again with save_to_disk")
    config = _json(folder / "dataset_info.json").get("config_name") \
        if (folder / "dataset_info.json").is_file() else None
    if config not in (None, task.hf_config):
        raise DataError(str(folder / "dataset_info.json"), "config_name", f"this is GLUE's "
                        f"{config} config, not {task.hf_config} (needed for {task.name})",
                        f"point data_dir: at the folder saved from nyu-mll/glue {task.hf_config}")
    return folder, files


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(str(path), "(file)", f"cannot read it as JSON: {error}",
                        "save the dataset again with save_to_disk") from None
    return data if isinstance(data, dict) else {}


def _read_arrow(task: Task, folder: Path, files: list[Path], limit: int | None):
    columns = _HF_TEXTS[task.hf_config]
    texts, labels, label_of = [], [], None
    for file in files:
        for batch in _batches(file):
            for name in (*columns, "label"):
                if name not in batch.schema.names:
                    raise DataError(str(file), name, f"no {name!r} column (found: "
                                    f"{', '.join(batch.schema.names)})",
                                    f"use the datasets library's GLUE {task.hf_config} data")
            label_of = label_of or _label_reader(task, folder, file, batch.schema)
            rows = zip(*(batch.column(name).to_pylist() for name in columns),
                       batch.column("label").to_pylist())
            for *pair, label in rows:
                labels.append(label_of(label, len(labels) + 1))
                texts.append(tuple(pair))
                if limit is not None and len(texts) >= limit:
                    return str(folder), tuple(texts), tuple(labels)
    if not texts:
        raise DataError(str(files[0]), "(file)", f"the {task.hf_split} split has no examples",
                        "load the dataset again with the datasets library")
    return str(folder), tuple(texts), tuple(labels)


def _batches(file: Path):
    """Record batches of a datasets Arrow file: an IPC stream, or (rarely) the IPC file format."""
    import pyarrow as pa
    import pyarrow.ipc  # noqa: F401

    try:
        with pa.memory_map(str(file)) as source:
            if source.read(6) == b"ARROW1":
                reader = pa.ipc.open_file(source)
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            else:
                source.seek(0)
                batches = pa.ipc.open_stream(source)
            yield from batches
    except (pa.ArrowException, OSError) as error:
        raise DataError(str(file), "(file)", f"not a readable Arrow file: {error}",
                        "delete this folder and load the dataset again") from None


def _label_reader(task: Task, folder: Path, file: Path, schema: pa.Schema):
    """A function from a stored label (and its row number) to farm's label."""
    info_file, features = _features(folder, schema)
    feature = features.get("label", {})
    if task.regression:
        if feature.get("_type") == "ClassLabel":
            raise DataError(info_file, "label", "class labels where scores were expected",
                            f"use the datasets library's GLUE {task.hf_config} data")
        return lambda value, row: _score(value, row, file)
    names = feature.get("names")
    if not names:
        raise DataError(info_file, "label", "the label's class names are not recorded",
                        "keep dataset_info.json beside the Arrow files")
    ours = [label_named(task, name) for name in names]
    if None in ours or sorted(ours) != sorted(task.labels):
        raise DataError(info_file, "label", f"class names {', '.join(names)} do not match "
                        f"{task.name}'s labels", f"use the datasets library's GLUE "
                        f"{task.hf_config} data")

    def label(value, row):
        if not isinstance(value, int) or not 0 <= value < len(ours):
            raise DataError(str(file), "label", f"row {row}: label {value} is not a class "
                            "(-1 marks a hidden test label)",
                            f"use the {task.hf_split} split, which has its labels")
        return ours[value]
    return label


def _features(folder: Path, schema: pa.Schema) -> tuple[str, dict]:
    info = folder / "dataset_info.json"
    if info.is_file() and isinstance(_json(info).get("features"), dict):
        return str(info), _json(info)["features"]
    metadata = (schema.metadata or {}).get(b"huggingface")
    features = json.loads(metadata).get("info", {}).get("features") if metadata else None
    return str(info), features if isinstance(features, dict) else {}


def _score(value, row: int, file: Path) -> float:
    if not isinstance(value, (int, float)) or not 0 <= value <= 5:
        raise DataError(str(file), "label", f"row {row}: score {value} is not a number "
                        "from 0 to 5", "use the validation split, which has its scores")
    return _shortest_float32(float(value))


def _shortest_float32(value: float) -> float:
    """The shortest decimal that is this float32: 3.8 rather than 3.799999952316284, as the
    TSV file writes it, so that both sources give the same examples and digest."""
    for digits in range(1, 10):
        short = float(f"{value:.{digits}g}")
        if struct.unpack("f", struct.pack("f", short))[0] == value:
            return short
    return value
