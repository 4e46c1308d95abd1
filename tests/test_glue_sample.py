"""The toy GLUE sample: examples/glue_sample.py writes it (farm.glue.sample), and the shipped
examples/glue-baselines.yaml runs on it unchanged. Its scores must be the checkpoints' own
predictions (transformers, in the test) scored against the written files by scikit-learn, read
here with the test's own table of the GLUE layout, not farm's.
"""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from farm.api import submit
from farm.glue.data import read_examples
from farm.glue.sample import write_sample
from glue_checkpoints import predict

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LINES = 48  # the script's default

# task: (file under glue_data, header, text columns, label column, checkpoint)
LAYOUT = {
    "cola": ("CoLA/dev.tsv", False, (3,), 1, "cola"),
    "mnli-m": ("MNLI/dev_matched.tsv", True, ("sentence1", "sentence2"), "gold_label", "mnli"),
    "mnli-mm": ("MNLI/dev_mismatched.tsv", True, ("sentence1", "sentence2"), "gold_label",
                "mnli"),
    "qnli": ("QNLI/dev.tsv", True, ("question", "sentence"), "label", "qnli"),
    "qqp": ("QQP/dev.tsv", True, ("question1", "question2"), "is_duplicate", "qqp"),
}
# The class words of the checkpoints' id2label that the files write as 0 and 1.
AS_WRITTEN = {"unacceptable": "0", "acceptable": "1", "not_duplicate": "0", "duplicate": "1"}


def _dev(data: Path, task: str) -> tuple[list[tuple[str, ...]], list[str]]:
    file, header, texts, label, _ = LAYOUT[task]
    rows = [line.split("\t") for line in (data / file).read_text(encoding="utf-8").splitlines()]
    names = rows.pop(0) if header else list(range(len(rows[0])))
    return ([tuple(row[names.index(c)] for c in texts) for row in rows],
            [row[names.index(label)] for row in rows])


def _metrics(task: str, gold: list[str], guess: list[str]) -> dict[str, float]:
    if task == "cola":
        return {"mcc": matthews_corrcoef(gold, guess)}
    if task == "qqp":
        return {"f1": f1_score(gold, guess, pos_label="1"), "accuracy": accuracy_score(gold, guess)}
    return {"accuracy": accuracy_score(gold, guess)}


def _rows(db_url: str, sql: str, *args) -> list[dict]:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql, args)]


def _stored(db_url: str, variant: str, task: str) -> tuple[list, list, dict]:
    """A job's stored gold labels and predictions, in example order, and its metrics."""
    stored = _rows(db_url, "select p.* from predictions p join jobs j on j.id = p.job_id "
                           "where j.variant = ? and j.task = ? order by p.example", variant, task)
    metrics = _rows(db_url, "select m.* from metrics m join jobs j on j.id = m.job_id "
                            "where j.variant = ? and j.task = ?", variant, task)
    return ([p["label"] for p in stored], [p["prediction"] for p in stored],
            {m["name"]: m["value"] for m in metrics})


def test_the_shipped_sweep_runs_on_the_written_sample_and_scores_every_task(
        tmp_path, write_yaml, db_url, device_names):
    written = subprocess.run([sys.executable, str(EXAMPLES / "glue_sample.py"),
                              str(tmp_path / "glue-sample")],
                             capture_output=True, text=True, timeout=300)
    assert written.returncode == 0, written.stderr
    said = " ".join(written.stdout.split())
    assert "toy GLUE sample" in said and "farm submit" in said
    sweep_file = Path(shutil.copy(EXAMPLES / "glue-baselines.yaml", tmp_path))
    sweep = yaml.safe_load(sweep_file.read_text())
    inventory = write_yaml("inventory.yaml", {"devices": [
        {"name": name, "kind": "local", "cpus": 1, "tags": sweep["devices"]}
        for name in device_names(2)]})

    report = submit(sweep_file, inventory, db=db_url)

    assert report.counts == {"done": 10}
    results = {(r["variant"], r["task"]): r for r in _rows(db_url, "select * from v_results")}
    assert set(results) == {(v, t) for v in ("fp32", "int8") for t in LAYOUT}
    data, seq_len = tmp_path / "glue-sample" / "glue_data", sweep["seq_lens"][0]
    for (variant, task), row in results.items():
        texts, gold = _dev(data, task)
        labels, guess, metrics = _stored(db_url, variant, task)
        assert labels == gold and len(gold) == LINES
        if variant == "fp32":  # the checkpoint's own predictions, straight from transformers
            checkpoint = tmp_path / "glue-sample" / "checkpoints" / LAYOUT[task][4]
            own = predict(checkpoint, texts, max_length=seq_len)
            assert guess == [AS_WRITTEN.get(name, name) for name in own]
        expected = _metrics(task, gold, guess)
        assert metrics == pytest.approx(expected, abs=1e-9)
        main = next(iter(expected))
        assert (row["metric"], row["score"]) == (main, pytest.approx(expected[main], abs=1e-9))
        assert row["eval_examples"] == LINES and row["score_note"] is None
        if variant == "fp32":
            assert row["score"] > 0.9, f"{task}: the toy task is learnable"


def test_the_written_files_are_glue_layout_with_the_lines_asked_for(tmp_path):
    first = write_sample(tmp_path / "a", lines=30, train=False)
    again = write_sample(tmp_path / "b", ["mnli"], lines=30, train=False)
    assert not (tmp_path / "a" / "checkpoints").exists()
    read = {task: read_examples(task, tmp_path / "a" / "glue_data") for task in LAYOUT}
    for task, examples in read.items():
        assert len(examples) == 30 and set(examples.labels) == set(examples.task.labels)
        assert all(len(texts) == (1 if task == "cola" else 2) for texts in examples.texts)
    assert read["mnli-m"].texts != read["mnli-mm"].texts
    assert [path.read_bytes() for path in first if "MNLI" in str(path)] == [
        path.read_bytes() for path in again]
    cola = (tmp_path / "a" / "glue_data" / "CoLA" / "dev.tsv").read_text().splitlines()
    mnli = (tmp_path / "a" / "glue_data" / "MNLI" / "dev_matched.tsv").read_text().splitlines()
    assert len(cola) == 30 and {len(line.split("\t")) for line in cola} == {4}
    assert len(mnli) == 31 and {len(line.split("\t")) for line in mnli} == {16}
    with pytest.raises(ValueError, match="tasks"):
        write_sample(tmp_path / "c", ["sst2"], train=False)
