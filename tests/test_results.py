"""The declaration of a result (farm/results.py) against the real migrations on real SQLite."""
import json
import sqlite3

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from agents.methods import result_fields
from farm.results import (FINAL, LOAD_FIELDS, METHOD_COLUMNS, RESULT_FIELDS, V_RESULTS, Failure,
                          Status, label, v_results_sql)
from farm.store import MIGRATIONS_DIR, Store
from farm.store.clock import utcnow
from farm.store.schema import Job, Sweep

# Columns of results and model_loads that say whose figures they are, not figures.
RESULT_KEYS = {"id", "job_id", "device", "load_id", "created_at"}
LOAD_KEYS = {"id", "load_key", "device", "model", "model_path", "variant", "created_at"}


def _migrate(path, revision: str, down: bool = False) -> None:
    """Upgrade (or downgrade) a database with the real migrations, as Store does."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with create_engine(f"sqlite:///{path}").begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def _columns(path, table: str) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[1] for row in db.execute(f"pragma table_info({table})")]


def _declared(revision: str) -> list[str]:
    return [c.name for c in V_RESULTS if c.since <= revision]


def test_view_at_0007_is_the_declaration_up_to_0007(tmp_path):
    _migrate(tmp_path / "a.db", "0007")
    assert _columns(tmp_path / "a.db", "v_results") == _declared("0007")


def test_view_at_head_only_adds_to_0007_and_is_the_declaration(tmp_path):
    _migrate(tmp_path / "a.db", "head")
    head = _columns(tmp_path / "a.db", "v_results")
    assert head[:len(_declared("0007"))] == _declared("0007")
    assert head == [c.name for c in V_RESULTS]
    # Every column's migration is one of the chain (the head may add none: 0014 adds indexes).
    known = {script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}
    assert {c.since for c in V_RESULTS} <= known, "a column declared for a migration not there"


def test_downgrade_from_0008_restores_0007_view(tmp_path):
    _migrate(tmp_path / "a.db", "head")
    _migrate(tmp_path / "a.db", "0007", down=True)
    assert _columns(tmp_path / "a.db", "v_results") == _declared("0007")
    assert "extra_json" not in _columns(tmp_path / "a.db", "results")


def test_every_declared_figure_is_a_column_and_every_column_is_declared(tmp_path):
    _migrate(tmp_path / "a.db", "head")
    assert set(_columns(tmp_path / "a.db", "results")) == \
        RESULT_KEYS | {f.name for f in RESULT_FIELDS}
    assert set(_columns(tmp_path / "a.db", "model_loads")) == \
        LOAD_KEYS | {f.name for f in LOAD_FIELDS}


def test_builtin_method_fields_have_columns():
    missing = [name for name, *_ in result_fields() if name not in METHOD_COLUMNS]
    assert not missing, (
        f"built-in method field(s) {missing} have no column in results: add a migration that "
        "adds the column, and list it here (farm.results.METHOD_COLUMNS)")
    gone = set(METHOD_COLUMNS) - {name for name, *_ in result_fields()}
    assert not gone, f"METHOD_COLUMNS lists {sorted(gone)}, which no built-in method declares"


def test_labels_are_unique_and_people_words():
    labels = [label(c.name) for c in V_RESULTS]
    assert len(set(labels)) == len(labels)
    assert (label("per_sample_ms"), label("peak_mem_mb"), label("p50_ms")) == (
        "ms/sample", "peak MiB", "p50 ms")
    with pytest.raises(ValueError):
        v_results_sql("0001")


def _store_with_jobs(tmp_path, n: int = 1):
    """A database migrated to head with one sweep of n queued jobs (written as the tables are,
    so that these tests do not depend on how sweeps expand)."""
    store = Store(str(tmp_path / "farm.db"))
    now = utcnow()
    with store._write() as db:
        sweep = Sweep(name="s", source="s.yaml", spec_json="{}", inventory_json="{}",
                      created_at=now, updated_at=now)
        db.add(sweep)
        db.flush()
        for i in range(n):
            db.add(Job(sweep_id=sweep.id, key=f"k{i}", target="d", model="bert-tiny",
                       variant="fp32", task="synthetic", batch_size=2 ** i, seq_len=16,
                       spec_json="{}", status=Status.QUEUED, attempts=0, created_at=now))
    return store, store.runnable_jobs(1, {f"k{i}" for i in range(n)})


def _finish(store, job, status, result=None, failure=None):
    store.job_started(job.id, "d")
    store.job_finished(job.id, {"status": status, "failure": failure, "device": "d",
                                "started_at": 1000.0, "finished_at": 1001.0, "error": None,
                                "result": result or {}})


def test_method_fields_go_to_their_columns_and_unknown_ones_to_extra_json(tmp_path):
    store, (job,) = _store_with_jobs(tmp_path)
    _finish(store, job, Status.DONE, {
        "p50_ms": 1.5, "latencies_ms": [1.5, 1.6],
        "method_fields": {"heads_pruned": 12, "reconstruction_error": 0.25, "my_sparsity": 0.5}})
    (row,) = store.sweep_results("s")
    assert (row["heads_pruned"], row["reconstruction_error"], row["factorized_layers"]) == (
        12, 0.25, None)
    assert json.loads(row["extra_json"]) == {"my_sparsity": 0.5}
    assert row["p50_ms"] == 1.5


def test_a_result_without_method_fields_has_no_extra_json(tmp_path):
    store, (job,) = _store_with_jobs(tmp_path)
    _finish(store, job, Status.DONE, {"p50_ms": 1.5})
    (row,) = store.sweep_results("s")
    assert row["extra_json"] is None and row["heads_pruned"] is None


def test_statuses_round_trip_through_the_database(tmp_path):
    store, jobs = _store_with_jobs(tmp_path, n=len(FINAL))
    for job, status in zip(jobs, FINAL):
        _finish(store, job, status, {"peak_mem_mb": 100.0},
                failure=None if status == Status.DONE else Failure.JOB)
    assert store.runnable_jobs(1, {j.key for j in jobs}) == []  # final ones never run again
    db = sqlite3.connect(tmp_path / "farm.db")
    stored = db.execute("select status, typeof(status), failure from jobs order by id").fetchall()
    assert stored == [(s.value, "text", None if s == Status.DONE else "job") for s in FINAL]
    assert [Status(s) for s, _, _ in stored] == list(FINAL)
    # Every Status is one the database accepts, and nothing else is.
    for status in Status:
        db.execute("update jobs set status = ? where id = ?", (status, jobs[0].id))
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("update jobs set status = 'finished' where id = ?", (jobs[0].id,))
    db.rollback()
    db.close()


@pytest.mark.parametrize("word", [Status.DONE, Failure.INFRA])
def test_statuses_are_bare_words_everywhere(word):
    assert f"{word}" == str(word) == "%s" % word == word.value
    assert json.dumps({"status": word}) == f'{{"status": "{word.value}"}}'
