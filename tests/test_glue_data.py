"""Reading GLUE examples: the original TSV files (tests/glue_files.py writes them as GLUE ships
them), the datasets library's cache and save_to_disk folders (Arrow streams written with pyarrow
as datasets writes them), and each error naming its file, line and fix."""
from __future__ import annotations

import json
import os
import shutil
from hashlib import sha256

import pyarrow as pa
import pyarrow.ipc
import pytest
from glue_files import write_datasets_cache, write_dev_file, write_saved_dataset

from farm.glue.data import DataError, read_examples
from farm.glue.tasks import TASKS, Task

QUOTES = ('He said "hi', '"Yes," she said, "we can."', "It's 5' 10\"")

EXAMPLES = {
    "cola": [(("The sailors rode the breeze clear of the rocks.",), "1"),
             (("Mary wonders that John left.",), "0"), ((QUOTES[0],), "1"),
             (("The more we study verbs, the crazier they get.",), "1"), ((QUOTES[1],), "0")],
    "sst2": [(("it 's a charming and often affecting journey . ",), "1"),
             (("unflinchingly bleak and desperate ",), "0"), ((QUOTES[0],), "0"),
             ((QUOTES[1],), "1"), ((QUOTES[2],), "1")],
    "mrpc": [(("He said the foodservice pie business doesn't fit.", QUOTES[0]), "1"),
             (("Magnarelli said Racicot hated the regime.", "His wife said he was 100."), "0"),
             ((QUOTES[1], QUOTES[2]), "1"), (("a", "b"), "0")],
    "stsb": [(("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing."), 5.0),
             (("A young child is riding a horse.", QUOTES[0]), 4.75),
             (("A man is feeding a mouse to a snake.", "The man is feeding a mouse."), 3.8),
             ((QUOTES[1], "A woman is playing the flute."), 0.6), (("x", "y"), 0.0)],
    "qqp": [(("Why are African-Americans so beautiful?", "Why are hispanics so beautiful?"), "0"),
            (("How do I learn SQL?", QUOTES[0]), "1"), ((QUOTES[1], QUOTES[2]), "0")],
    "mnli-m": [(("The new rights are nice enough", "Everyone really likes the newest benefits "),
                "neutral"),
               (("This site includes a list of all award winners.", QUOTES[0]), "contradiction"),
               ((QUOTES[1], "uh-huh oh yeah"), "entailment"), (("a b", "c"), "contradiction")],
    "mnli-mm": [(("Your contribution helped make it possible.", QUOTES[2]), "entailment"),
                (("The Old One always comforted Ca'daan.", "Ca'daan knew the Old One."),
                 "neutral"), (("p", "h"), "contradiction")],
    "qnli": [(("What came into force after the new constitution?", "The Senate was reformed."),
              "entailment"), ((QUOTES[0], "Nothing here."), "not_entailment")],
    "rte": [(("Dana Reeve, the widow of the actor, died.", "Christopher Reeve had an accident."),
             "not_entailment"), ((QUOTES[1], QUOTES[2]), "entailment")],
    "wnli": [(("The drain is clogged with hair.", "The hair has to be removed."), "1"),
             (("Jane knocked on Susan's door.", QUOTES[0]), "0"), (("s1", "s2"), "1")],
}


def texts_and_labels(examples):
    return tuple(t for t, _ in examples), tuple(y for _, y in examples)


def test_task_table():
    assert list(TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli-m", "mnli-mm", "qnli",
                           "rte", "wnli"]
    assert TASKS["mnli-m"].labels == ("contradiction", "entailment", "neutral")
    assert TASKS["mnli-mm"].dev_file == "dev_mismatched.tsv"
    assert TASKS["mnli-mm"].hf_split == "validation_mismatched"
    assert TASKS["stsb"].regression and TASKS["stsb"].num_labels == 1
    assert TASKS["mrpc"].main_metric == "f1" and TASKS["mrpc"].pair
    assert not TASKS["cola"].pair and not TASKS["cola"].header
    assert TASKS["cola"].main_metric == "mcc" and TASKS["cola"].num_labels == 2


@pytest.mark.parametrize("task", list(TASKS))
def test_dev_file_round_trip(tmp_path, task):
    path = write_dev_file(tmp_path, task, EXAMPLES[task])
    examples = read_examples(task, tmp_path)
    assert (examples.texts, examples.labels) == texts_and_labels(EXAMPLES[task])
    assert examples.source == str(path) and len(examples) == len(EXAMPLES[task])
    assert examples.task is TASKS[task] and len(examples.digest) == 16


def test_layouts_are_the_originals(tmp_path):
    cola = write_dev_file(tmp_path, "cola", EXAMPLES["cola"][:2]).read_text().splitlines()
    assert cola[1] == "gj04\t0\t*\tMary wonders that John left."
    mnli = write_dev_file(tmp_path, "mnli-m", EXAMPLES["mnli-m"]).read_text().splitlines()
    assert len(mnli[0].split("\t")) == 16 and mnli[0].endswith("\tgold_label")
    stsb = write_dev_file(tmp_path, "stsb", EXAMPLES["stsb"]).read_text().splitlines()
    assert len(stsb[0].split("\t")) == 10 and stsb[1].endswith("\t5.000")
    mrpc = write_dev_file(tmp_path, "mrpc", EXAMPLES["mrpc"]).read_bytes()
    assert mrpc.startswith(b"\xef\xbb\xbfQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")


def test_mnli_takes_the_gold_label_not_label1(tmp_path):
    path = write_dev_file(tmp_path, "mnli-m", EXAMPLES["mnli-m"][:1])
    header, row = path.read_text().splitlines()
    fields = row.split("\t")
    fields[10:15] = ["entailment", "contradiction", "neutral", "neutral", "neutral"]
    path.write_text(f"{header}\n" + "\t".join(fields) + "\n")
    assert read_examples("mnli-m", tmp_path).labels == ("neutral",)


def test_columns_are_found_by_header_name(tmp_path):
    path = tmp_path / "SST-2" / "dev.tsv"
    path.parent.mkdir()
    path.write_text("label\tsentence\n1\tgood\n0\tbad\n")
    examples = read_examples("sst2", tmp_path)
    assert examples.texts == (("good",), ("bad",)) and examples.labels == ("1", "0")


def test_stray_quotes_blank_lines_and_crlf(tmp_path):
    path = tmp_path / "SST-2" / "dev.tsv"
    path.parent.mkdir()
    # csv's default quoting would read the last two rows as one field spanning a line break.
    path.write_bytes(b'sentence\tlabel\r\n"He said "hi\t1\r\n\r\n\nshe left "\t0\r\n'
                     b'"quoted\t1\nnext line"\t0\n')
    examples = read_examples("sst2", tmp_path)
    assert examples.texts == (('"He said "hi',), ('she left "',), ('"quoted',), ('next line"',))
    assert examples.labels == ("1", "0", "1", "0")


def test_max_samples_takes_the_first_and_stops_reading(tmp_path):
    path = write_dev_file(tmp_path, "cola", EXAMPLES["cola"])
    with path.open("a") as handle:
        handle.write("gj04\tbroken row\n")  # never reached
    examples = read_examples("cola", tmp_path, max_samples=2)
    assert examples.texts == texts_and_labels(EXAMPLES["cola"])[0][:2]
    assert read_examples("cola", tmp_path, 2).digest == examples.digest
    with pytest.raises(DataError):
        read_examples("cola", tmp_path)


def test_digest_is_stable_and_follows_labels_and_task(tmp_path):
    write_dev_file(tmp_path / "a", "rte", EXAMPLES["rte"])
    first = read_examples("rte", tmp_path / "a").digest
    texts, labels = texts_and_labels(EXAMPLES["rte"])
    payload = json.dumps(["rte", texts, labels], ensure_ascii=False, separators=(",", ":"))
    assert first == read_examples("rte", tmp_path / "a").digest == sha256(
        payload.encode()).hexdigest()[:16]  # a pure function of the examples, across runs
    changed = [EXAMPLES["rte"][0], (EXAMPLES["rte"][1][0], "not_entailment")]
    write_dev_file(tmp_path / "b", "rte", changed)
    assert read_examples("rte", tmp_path / "b").digest != first
    write_dev_file(tmp_path, "mnli-m", EXAMPLES["mnli-m"])
    write_dev_file(tmp_path, "mnli-mm", EXAMPLES["mnli-m"])
    assert read_examples("mnli-m", tmp_path).digest != read_examples("mnli-mm", tmp_path).digest


def raises(*args, **kwargs) -> DataError:
    with pytest.raises(DataError) as caught:
        read_examples(*args, **kwargs)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    return caught.value


def test_missing_folder_or_file(tmp_path):
    error = raises("cola", tmp_path / "glue_data")
    assert f"no CoLA/dev.tsv under {tmp_path / 'glue_data'}" in str(error)
    assert "point data_dir: at the GLUE distribution" in str(error)
    write_dev_file(tmp_path, "mnli-m", EXAMPLES["mnli-m"])
    error = raises("mnli-mm", tmp_path)
    assert error.file == str(tmp_path / "MNLI" / "dev_mismatched.tsv")


def test_short_row_names_its_line(tmp_path):
    path = write_dev_file(tmp_path, "cola", EXAMPLES["cola"][:2])
    with path.open("a") as handle:
        handle.write("\ngj04\t1\tno sentence here\n")
    error = raises("cola", tmp_path)
    assert f"{path}:4:" in str(error) and error.line == 4
    assert "expected at least 4 tab-separated columns, found 3" in str(error)
    path = write_dev_file(tmp_path, "qnli", EXAMPLES["qnli"])
    with path.open("a") as handle:
        handle.write("7\twhat?\tentailment\n")
    error = raises("qnli", tmp_path)
    assert (error.line, error.field) == (4, "label") and str(path) in str(error)


@pytest.mark.parametrize("task, label", [("mnli-m", "maybe"), ("mnli-m", "-"), ("qnli", "0"),
                                         ("rte", "1"), ("cola", "2"), ("wnli", "entailment"),
                                         ("qqp", "")])
def test_unknown_label(tmp_path, task, label):
    examples = EXAMPLES[task][:2] + [(EXAMPLES[task][0][0], label)]
    path = write_dev_file(tmp_path, task, examples)
    error = raises(task, tmp_path)
    line = 3 if task == "cola" else 4
    assert f"{path}:{line}:" in str(error) and f"label {label!r} is not one of" in str(error)


@pytest.mark.parametrize("score", ["high", "7", "nan", "-0.5"])
def test_bad_stsb_score(tmp_path, score):
    path = write_dev_file(tmp_path, "stsb", EXAMPLES["stsb"][:1] + [(("a", "b"), score)])
    error = raises("stsb", tmp_path)
    assert f"{path}:3: score: score {score!r} is not a number from 0 to 5" in str(error)


@pytest.mark.parametrize("content, words", [(b"", "the file is empty"),
                                            (b"\n\n", "the file is empty"),
                                            (b"sentence\tlabel\n", "header but no examples")])
def test_empty_file(tmp_path, content, words):
    path = tmp_path / "SST-2" / "dev.tsv"
    path.parent.mkdir()
    path.write_bytes(content)
    error = raises("sst2", tmp_path)
    assert str(path) in str(error) and words in str(error)


def test_missing_header_column_and_bad_bytes(tmp_path):
    path = tmp_path / "RTE" / "dev.tsv"
    path.parent.mkdir()
    path.write_text("index\tsentence1\thypothesis\tlabel\n0\ta\tb\tentailment\n")
    error = raises("rte", tmp_path)
    assert f"{path}:1: sentence2: no 'sentence2' column" in str(error)
    path.write_bytes(b"index\tsentence1\tsentence2\tlabel\n0\tcaf\xe9\tb\tentailment\n")
    assert raises("rte", tmp_path).line == 2


def test_unknown_task(tmp_path):
    assert "use one of: cola, sst2" in str(raises("mnli", tmp_path))


def test_a_task_object_is_accepted(tmp_path):
    write_dev_file(tmp_path, "wnli", EXAMPLES["wnli"])
    assert read_examples(TASKS["wnli"], tmp_path).labels == ("1", "0", "1")
    custom = Task("wnli", "WNLI", "dev.tsv", True, ("sentence2",), "label", ("0", "1"),
                  ("accuracy",), "wnli", "validation")
    assert read_examples(custom, tmp_path).texts[0] == ("The hair has to be removed.",)


# --- the datasets library's files ---------------------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "hf-datasets"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(root))
    return root


@pytest.mark.parametrize("task", list(TASKS))
def test_datasets_cache_gives_what_the_dev_file_gives(tmp_path, cache, task):
    folder = write_datasets_cache(cache, task, EXAMPLES[task])
    write_dev_file(tmp_path / "glue", task, EXAMPLES[task])
    cached, original = read_examples(task, None), read_examples(task, tmp_path / "glue")
    assert (cached.texts, cached.labels) == (original.texts, original.labels)
    assert cached.digest == original.digest and cached.source == str(folder)


def test_mnli_labels_are_mapped_by_name_not_position(cache):
    folder = write_datasets_cache(cache, "mnli-m", EXAMPLES["mnli-m"])
    with pa.memory_map(str(folder / "glue-validation_matched.arrow")) as source:
        stored = pa.ipc.open_stream(source).read_all().column("label").to_pylist()
    assert stored == [1, 2, 0, 2]  # datasets: entailment, neutral, contradiction
    assert read_examples("mnli-m", None).labels == ("neutral", "contradiction", "entailment",
                                                    "contradiction")


def test_both_mnli_splits_share_a_cache_folder(cache):
    write_datasets_cache(cache, "mnli-m", EXAMPLES["mnli-m"])
    write_datasets_cache(cache, "mnli-mm", EXAMPLES["mnli-mm"])
    assert read_examples("mnli-mm", None).labels == ("entailment", "neutral", "contradiction")
    assert len(read_examples("mnli-m", None)) == 4


def test_older_cache_layout_shards_and_file_format(cache):
    write_datasets_cache(cache, "sst2", EXAMPLES["sst2"], layout="old")
    assert read_examples("sst2", None).labels == ("1", "0", "0", "1", "1")
    folder = write_datasets_cache(cache, "qqp", EXAMPLES["qqp"], shards=2)
    assert sorted(p.name for p in folder.glob("*.arrow")) == [
        "glue-validation-00000-of-00002.arrow", "glue-validation-00001-of-00002.arrow"]
    assert read_examples("qqp", None).texts == texts_and_labels(EXAMPLES["qqp"])[0]
    assert read_examples("qqp", None, max_samples=2).labels == ("0", "1")
    write_datasets_cache(cache, "cola", EXAMPLES["cola"], file_format=True)
    assert read_examples("cola", None).labels == texts_and_labels(EXAMPLES["cola"])[1]


def test_the_newest_cache_folder_of_the_config_is_read(cache):
    old = write_datasets_cache(cache, "sst2", EXAMPLES["sst2"][:1], revision="a" * 40)
    write_datasets_cache(cache, "sst2", EXAMPLES["sst2"][:2], revision="b" * 40)
    os.utime(old, (2e9, 2e9))
    assert read_examples("sst2", None).source == str(old)
    other = cache / "nyu-mll___glue" / "sst2_other" / "0.0.0" / ("c" * 40)
    shutil.copytree(old, other)
    os.utime(other, (3e9, 3e9))
    assert read_examples("sst2", None).source == str(old)


def test_cache_location_follows_hf_home_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    write_datasets_cache(tmp_path / "hf" / "datasets", "rte", EXAMPLES["rte"])
    assert len(read_examples("rte", None)) == 2
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_datasets_cache(tmp_path / "home" / ".cache" / "huggingface" / "datasets", "wnli",
                         EXAMPLES["wnli"])
    assert len(read_examples("wnli", None)) == 3


def test_hidden_test_labels_are_refused(cache):
    folder = write_datasets_cache(cache, "rte", EXAMPLES["rte"] + [(("p", "h"), -1)])
    error = raises("rte", None)
    assert str(folder / "glue-validation.arrow") in str(error) and "row 3: label -1" in str(error)


def test_nothing_in_the_cache(cache):
    error = raises("qnli", None)
    assert str(cache) in str(error) and "glue-validation.arrow" in str(error)
    assert "point data_dir:" in str(error)


@pytest.mark.parametrize("task", ["mnli-m", "cola", "stsb"])
def test_save_to_disk_folder(tmp_path, task):
    saved = write_saved_dataset(tmp_path / "saved", task, EXAMPLES[task])
    assert json.loads((saved / "dataset_dict.json").read_text())["splits"] == [
        TASKS[task].hf_split]
    examples = read_examples(task, saved)
    assert (examples.texts, examples.labels) == texts_and_labels(EXAMPLES[task])
    assert examples.source == str(saved / TASKS[task].hf_split)


def test_save_to_disk_of_both_mnli_splits_and_of_one_config_below(tmp_path):
    write_saved_dataset(tmp_path / "mnli", "mnli-m", EXAMPLES["mnli-m"])
    write_saved_dataset(tmp_path / "mnli", "mnli-mm", EXAMPLES["mnli-mm"])
    assert read_examples("mnli-mm", tmp_path).labels == ("entailment", "neutral",
                                                         "contradiction")
    assert read_examples("mnli-m", tmp_path / "mnli", max_samples=1).labels == ("neutral",)


def test_save_to_disk_of_one_split(tmp_path):
    write_saved_dataset(tmp_path, "wnli", EXAMPLES["wnli"], whole=False)
    assert read_examples("wnli", tmp_path).labels == ("1", "0", "1")
    error = raises("mnli-m", tmp_path)  # wnli's data, and the validation split
    assert "this saved dataset is the validation split, not validation_matched" in str(error)


def test_save_to_disk_of_another_config_or_split(tmp_path):
    write_saved_dataset(tmp_path, "sst2", EXAMPLES["sst2"])
    error = raises("cola", tmp_path)
    assert "this is GLUE's sst2 config, not cola" in str(error)
    assert str(tmp_path / "validation" / "dataset_info.json") in str(error)
    error = raises("mnli-mm", tmp_path)
    assert "no validation_mismatched split (found: validation)" in str(error)


def test_class_names_from_the_schema_when_dataset_info_lacks_them(tmp_path):
    saved = write_saved_dataset(tmp_path, "qnli", EXAMPLES["qnli"])
    (saved / "validation" / "dataset_info.json").write_text("{}")
    assert read_examples("qnli", saved).labels == ("entailment", "not_entailment")


def test_cr_only_line_ends_are_lines(tmp_path):
    """A file saved with old Mac line ends (\r alone) holds as many examples as it has lines."""
    path = tmp_path / "SST-2" / "dev.tsv"
    path.parent.mkdir()
    path.write_bytes(b"sentence\tlabel\rgood\t1\r\rbad\t0\rok\t1\r")
    examples = read_examples("sst2", tmp_path)
    assert examples.texts == (("good",), ("bad",), ("ok",)) and examples.labels == ("1", "0", "1")


@pytest.mark.parametrize("body, line, words", [
    (b"sentence\tlabel\ngood\t1\rbad\t0\nok\t1\n", 2, "3 tab-separated columns where the file has 2"),
    (b"sentence\tlabel\ngo\tod\t1\nbad\t0\n", 2, "a tab inside a text"),
    (b"sentence\tlabel\ngood\t1\nb\0ad\t0\n", 3, "a NUL byte"),
])
def test_joined_rows_tabs_and_nul_bytes_name_their_line(tmp_path, body, line, words):
    """Rows joined by a lone \r in an LF file, or a text's own tab, would shift columns: refused
    with the line, as is a NUL byte."""
    path = tmp_path / "SST-2" / "dev.tsv"
    path.parent.mkdir()
    path.write_bytes(body)
    error = raises("sst2", tmp_path)
    assert error.line == line and f"{path}:{line}:" in str(error) and words in str(error)
