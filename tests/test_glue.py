"""GLUE accuracy end to end, on checkpoints and data that farm has never seen: tiny BERTs trained
inside the test (tests/glue_checkpoints.py) and GLUE-format files written by it
(tests/glue_files.py). farm's stored predictions must be the model's own, and its metrics must
equal scikit-learn's and scipy's on them; the trained models must clearly beat chance.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score

from conftest import QUICK
from farm.api import submit
from farm.errors import ConfigError
from glue_checkpoints import examples, predict, train_checkpoint
from glue_files import write_dev_file

SEQ = 32
SAMPLES = 48  # of the 60 examples written: max_samples takes the first ones
FARM = str(Path(sys.executable).parent / "farm")


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    """Three fine-tuned checkpoints (one names its labels, in reverse order) and their dev files."""
    root = tmp_path_factory.mktemp("glue")
    checkpoints = {
        "sst2": train_checkpoint(root / "sst2", "single", label_names=("1", "0")),
        "mrpc": train_checkpoint(root / "mrpc", "pair", safe_serialization=False),
        "stsb": train_checkpoint(root / "stsb", "regression"),
    }
    data = root / "glue_data"
    written = {"sst2": examples("single", 60, seed=101), "mrpc": examples("pair", 60, seed=102),
               "stsb": examples("regression", 60, seed=103)}
    for task, rows in written.items():
        write_dev_file(data, task, rows)
    return checkpoints, data, written


def _rows(db_url, sql, *args):
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql, args)]


def _local(write_yaml, *names):
    return write_yaml("inventory.yaml", {"devices": [
        {"name": name, "kind": "local", "cpus": 1} for name in names]})


def _sweep(glue, **extra):
    checkpoints, data, _ = glue
    return {"name": "glue", "models": [{"name": "tiny", "paths": {
                t: str(p) for t, p in checkpoints.items()}}],
            "tasks": ["sst2", "mrpc", "stsb"], "data_dir": str(data), "max_samples": SAMPLES,
            "batch_sizes": [4], "seq_lens": [SEQ], "measure": QUICK, **extra}


def _independent(glue, task):
    """The test's own predictions and metrics, from transformers, scikit-learn and scipy."""
    checkpoints, _, written = glue
    rows = written[task][:SAMPLES]
    gold = [label for _, label in rows]
    guess = predict(checkpoints[task], [texts for texts, _ in rows], max_length=SEQ)
    if task == "stsb":
        metrics = {"pearson": pearsonr(gold, guess)[0], "spearman": spearmanr(gold, guess)[0]}
    elif task == "mrpc":
        metrics = {"f1": f1_score(gold, guess, pos_label="1"),
                   "accuracy": accuracy_score(gold, guess)}
    else:
        metrics = {"accuracy": accuracy_score(gold, guess)}
    return gold, guess, metrics


def test_scores_equal_independent_metrics_on_unseen_checkpoints(glue, write_yaml, db_url,
                                                                 device_names):
    checkpoints, _, _ = glue
    sweep = _sweep(glue)
    sweep["models"] += ["bert-tiny", {"name": "sst2-everywhere", "path": str(checkpoints["sst2"])}]
    # two devices: the five model loads (one per checkpoint) on 2 cores
    report = submit(write_yaml("sweep.yaml", sweep), _local(write_yaml, *device_names(2)),
                    db=db_url)
    assert report.counts == {"done": 9}
    results = {(r["model"], r["task"]): r for r in _rows(db_url, "select * from v_results")}

    for task, main, bar in (("sst2", "accuracy", 0.85), ("mrpc", "f1", 0.85),
                            ("stsb", "pearson", 0.7)):
        row = results[("tiny", task)]
        gold, guess, expected = _independent(glue, task)
        stored = _rows(db_url, "select p.* from predictions p join jobs j on j.id = p.job_id "
                               "where j.model = 'tiny' and j.task = ? order by p.example", task)
        assert [p["example"] for p in stored] == list(range(SAMPLES))
        assert [p["label"] for p in stored] == [str(g) for g in gold]  # the file's first rows
        if task == "stsb":
            assert [float(p["prediction"]) for p in stored] == pytest.approx(guess, abs=1e-4)
        else:
            assert [p["prediction"] for p in stored] == guess
        metrics = {m["name"]: m["value"] for m in _rows(
            db_url, "select m.* from metrics m join jobs j on j.id = m.job_id "
                    "where j.model = 'tiny' and j.task = ?", task)}
        assert metrics == pytest.approx(expected, abs=1e-6)
        assert (row["metric"], row["score"]) == (main, pytest.approx(expected[main], abs=1e-6))
        assert row["score"] >= bar, f"{task}: the trained model should clearly beat chance"
        assert row["eval_examples"] == SAMPLES and row["score_note"] is None
        assert row["tokenizer"].startswith("checkpoint") and 4 < row["tokens_mean"] <= SEQ
        assert row["per_sample_ms"] > 0 and row["peak_mem_mb"] > 0

    # Random weights: latency and memory on the task's inputs, no score, and the reason.
    for task in ("sst2", "mrpc", "stsb"):
        row = results[("bert-tiny", task)]
        assert row["score"] is None and row["metric"] is None
        assert "random weights" in row["score_note"] and row["eval_examples"] is None
        assert row["per_sample_ms"] > 0 and row["tokenizer"].startswith("hashed words")
    assert _rows(db_url, "select count(*) n from predictions p join jobs j on j.id = p.job_id "
                         "where j.model = 'bert-tiny'")[0]["n"] == 0

    # A checkpoint fine-tuned for one task, run on others: scored where its outputs are that
    # task's labels, latency and memory only where they cannot be (a regression task).
    assert results[("sst2-everywhere", "mrpc")]["score"] is not None
    stsb = results[("sst2-everywhere", "stsb")]
    assert stsb["score"] is None and "regression" in stsb["score_note"]

    table = subprocess.run([FARM, "table", "glue", "--db", db_url, "-f", "markdown"],
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    tiny = next(line for line in table.stdout.splitlines() if line.startswith("| tiny"))
    assert f"{results[('tiny', 'sst2')]['score']:.3f}" in tiny
    assert f"{results[('tiny', 'stsb')]['score']:.3f}" in tiny


def test_a_changed_file_is_new_work_and_the_same_file_is_not(glue, write_yaml, db_url,
                                                             device_names, tmp_path):
    """Jobs are keyed by the examples' content: resubmitting runs nothing; other data runs again."""
    inventory = _local(write_yaml, device_names(1)[0])
    sweep = _sweep(glue, tasks=["sst2"])
    first = submit(write_yaml("sweep.yaml", sweep), inventory, db=db_url)
    again = submit(write_yaml("sweep.yaml", sweep), inventory, db=db_url)
    assert first.ran == 1 and again.ran == 0
    fewer = submit(write_yaml("sweep.yaml", dict(sweep, max_samples=10)), inventory, db=db_url)
    assert fewer.ran == 1
    counts = _rows(db_url, "select eval_examples from v_results order by eval_examples")
    assert [r["eval_examples"] for r in counts] == [10, SAMPLES]


@pytest.mark.parametrize("change, field, words", [
    ({"data_dir": "nowhere"}, "(file)", "no SST-2/dev.tsv"),
    ({"tasks": ["sst2", "mnli-m"]}, "models[0].paths", "no checkpoint for task 'mnli-m'"),
    ({"models": [{"name": "t", "paths": {"sst-2": "x"}}]}, "models[0].paths.sst-2", "unknown task"),
])
def test_bad_glue_input_is_refused_before_anything_is_written(glue, write_yaml, db_url,
                                                               device_names, change, field, words):
    sweep = dict(_sweep(glue, tasks=["sst2"]), **change)
    with pytest.raises(ConfigError) as caught:
        submit(write_yaml("sweep.yaml", sweep), _local(write_yaml, device_names(1)[0]), db=db_url)
    assert caught.value.field == field and words in str(caught.value)
    assert not Path(db_url.removeprefix("sqlite:///")).exists()


def test_a_checkpoint_named_for_a_task_must_have_its_labels(glue, write_yaml, db_url,
                                                            device_names):
    checkpoints, _, _ = glue
    sweep = _sweep(glue, tasks=["stsb"])
    sweep["models"][0]["paths"]["stsb"] = str(checkpoints["mrpc"])
    with pytest.raises(ConfigError) as caught:
        submit(write_yaml("sweep.yaml", sweep), _local(write_yaml, device_names(1)[0]), db=db_url)
    assert caught.value.field == "models[0].paths.stsb"
    assert "regression" in str(caught.value) and caught.value.line is not None


def test_a_malformed_row_names_the_file_and_line(glue, write_yaml, db_url, device_names,
                                                  tmp_path):
    data = tmp_path / "broken"
    path = write_dev_file(data, "mrpc", examples("pair", 5, seed=1))
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0]  # one column short
    path.write_text("\n".join(lines) + "\n")
    sweep = _sweep(glue, tasks=["mrpc"], data_dir=str(data))
    with pytest.raises(ConfigError) as caught:
        submit(write_yaml("sweep.yaml", sweep), _local(write_yaml, device_names(1)[0]), db=db_url)
    assert f"{path}:4" in str(caught.value) and "columns" in str(caught.value)
    assert not Path(db_url.removeprefix("sqlite:///")).exists()


def test_a_board_on_the_jetson_stack_scores_an_uploaded_checkpoint(
        glue, boards, write_yaml, db_url, tmp_path, jetson_python):
    """Over SSH, on Python 3.6 / torch 1.10 / transformers 4.18: the checkpoint (safetensors
    only) is uploaded as pytorch_model.bin by content hash, its tokenizer is the board's own
    transformers', and the predictions are the same as the test's own."""
    checkpoints, _, _ = glue
    assert (checkpoints["stsb"] / "model.safetensors").exists()
    board, = boards(1)
    known_hosts = tmp_path / "known_hosts"
    inventory = write_yaml("inventory.yaml", {"devices": [
        board.inventory_entry(known_hosts, jetson_python)]})
    trusted = subprocess.run([FARM, "devices", "trust", board.name, "--yes", "-i",
                              str(inventory)], capture_output=True, text=True, timeout=120)
    assert trusted.returncode == 0, trusted.stderr
    sweep = _sweep(glue, tasks=["sst2", "stsb"])
    assert submit(write_yaml("sweep.yaml", sweep), inventory, db=db_url).counts == {"done": 2}
    for task in ("sst2", "stsb"):
        row = _rows(db_url, "select * from v_results where task = ?", task)[0]
        env = json.loads(_rows(db_url, "select env_json from results r join jobs j "
                                       "on j.id = r.job_id where j.task = ?", task)[0]["env_json"])
        assert env["python"] == "3.6.15" and env["transformers"] == "4.18.0"
        _, guess, expected = _independent(glue, task)
        main = "accuracy" if task == "sst2" else "pearson"
        assert row["score"] == pytest.approx(expected[main], abs=1e-3)
    uploads = sorted(p.name for p in (board.workdir / "models").iterdir())
    assert len(uploads) == 2 and all(not n.count(".partial") for n in uploads)
    stsb_copy = next(p for p in (board.workdir / "models").iterdir() if p.name.startswith("stsb"))
    assert (stsb_copy / "pytorch_model.bin").exists()
    assert not (stsb_copy / "model.safetensors").exists()


def test_methods_on_a_fine_tuned_checkpoint_are_scored_and_stream_their_own_logits(
        glue, write_yaml, db_url, device_names, tmp_path, monkeypatch):
    """Every built-in compression method on a checkpoint trained in the test: each scored by
    scikit-learn from its own stored predictions, and streamed (the store holding the
    transformed layers) with the eager transformed model's logits and predictions."""
    from sklearn.metrics import accuracy_score

    from farm.comparisons import compare

    monkeypatch.setenv("FARM_CACHE", str(tmp_path / "cache"))
    methods = {  # the tiny model: hidden 32, 2 heads, FFN 64, 2 layers
        "heads-25": {"prune_heads": 0.25},  # 1 of its 2 heads, in each layer
        "rank-25": {"low_rank": {"rank": 0.25}},  # rank 8 of the 32-wide matrices
        "kron-4": {"kronecker": {"factor": 4}},
        "ffn-50": {"prune_ffn": 0.5},
        "mag-50": {"magnitude": {"sparsity": 0.5}},
        "mag-50-csr": {"magnitude": {"sparsity": 0.5, "kernel": "sparse"}},
    }
    executions = dict.fromkeys(methods, "stream")
    executions["rank-25"] = "stream+prefetch"
    variants = ["fp32"] + [dict(name=n, **m) for n, m in methods.items()] + [
        dict(name=f"{n}-stream", execution=executions[n], **m) for n, m in methods.items()]
    sweep = dict(_sweep(glue), tasks=["sst2"], variants=variants)
    inventory = _local(write_yaml, *device_names(2))  # two: 13 agents' loads on 2 cores
    report = submit(write_yaml("sweep.yaml", sweep), inventory, db=db_url)
    assert report.counts == {"done": len(variants)}
    rows = {r["variant"]: r for r in report.results}
    predictions = {}
    for variant, row in rows.items():
        stored = _rows(db_url, "select p.* from predictions p join jobs j on j.id = p.job_id "
                               "where j.variant = ? order by p.example", variant)
        predictions[variant] = [p["prediction"] for p in stored]
        expected = accuracy_score([p["label"] for p in stored], predictions[variant])
        assert len(stored) == SAMPLES
        assert (row["metric"], row["score"]) == ("accuracy", pytest.approx(expected, abs=1e-9))
    assert rows["heads-25"]["heads_pruned"] == 2 and rows["rank-25"]["factorized_layers"] == 12
    assert 0 < rows["rank-25"]["reconstruction_error"] < 1
    assert rows["heads-25"]["params"] < rows["fp32"]["params"]
    assert rows["kron-4"]["factorized_layers"] == 12 and rows["ffn-50"]["neurons_pruned"] == 64
    # the mask stores every weight, and zeroes half of the encoder's 2 x (4 x 32 x 32 + 2 x 32 x 64)
    assert rows["mag-50"]["params"] == rows["fp32"]["params"]
    assert rows["fp32"]["nonzero_params"] - rows["mag-50"]["nonzero_params"] == 2 * 8192 // 2
    assert rows["mag-50"]["sparsity"] == 0.5
    assert (rows["mag-50"]["kernel"], rows["mag-50-csr"]["kernel"]) == ("dense", "sparse_csr")
    for eager in methods:
        streamed = f"{eager}-stream"
        assert predictions[streamed] == predictions[eager]
        compared = next(c for c in compare(report.results) if c.result["variant"] == streamed)
        assert compared.reference["variant"] == eager and compared.stream_gap <= 1e-5
        assert rows[streamed]["params"] == rows[eager]["params"]
        assert rows[streamed]["nonzero_params"] == rows[eager]["nonzero_params"]
