"""Hostile and careless input through the real `farm` command: each is refused in one line with
its file, field and fix, with exit 2 (bad files) or 4 (the database), quickly, before any device
is prepared and without a byte of the database changing."""
from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from farm.limits import host_cpus, host_memory
from farm.store import MIGRATIONS_DIR, Store

FARM = str(Path(sys.executable).parent / "farm")
GOOD_SWEEP = "name: s\nmodels: [bert-tiny]\n"
GOOD_INVENTORY = "devices:\n  - {name: a, kind: cgroup, memory: 1GiB}\n"


def _farm(*args, cwd, timeout=60):
    return subprocess.run([FARM, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


def _alias_bomb(levels: int) -> str:
    """A "billion laughs": each level's list holds nine aliases of the level below."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return GOOD_SWEEP + "\n".join(lines) + "\n"


def _more_memory_than_this_host() -> str:
    return f"{host_memory() // 2**20 + 1024}MiB"


CASES = {
    # name: (sweep text or bytes, inventory text or bytes, exit code, words in the line)
    "alias bomb": (_alias_bomb(9), None, "sweep.yaml:4: (yaml): its aliases expand to more"),
    "alias cycle": ("name: s\nmodels: &m [*m]\n", None, "sweep.yaml:2: (yaml): an alias"),
    "binary sweep": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff", None,
                     "sweep.yaml:1: (file): not UTF-8 text"),
    "NUL in sweep": (b"name: s\nmodels: [bert-tiny]\x00\n", None,
                     "sweep.yaml:2: (file): not a text file"),
    "binary inventory": (None, b"\xff\xfe\x00d\x00e\x00v", "inventory.yaml:1: (file): not UTF-8"),
    "duplicate key": (GOOD_SWEEP + "batch_sizes: [1]\nbatch_sizes: [8]\n", None,
                      "sweep.yaml:4: batch_sizes: this key appears twice"),
    "duplicate nested key": (None, "devices:\n  - {name: a, kind: cgroup, memory: 1GiB, "
                             "memory: 2GiB}\n", "inventory.yaml:2: memory: this key appears"),
    "huge batch": (GOOD_SWEEP + "batch_sizes: [10000000000000000000]\n", None,
                   "sweep.yaml:3: batch_sizes[0]: Input should be less than or equal to"),
    "boolean batch": (GOOD_SWEEP + "batch_sizes: [true]\n", None,
                      "sweep.yaml:3: batch_sizes[0]: true is not a number"),
    "seq_len past the catalog model": (GOOD_SWEEP + "seq_lens: [128, 513]\n", None,
                                       "sweep.yaml:3: seq_lens[1]: 513 is longer than model "
                                       "'bert-tiny' allows (512 positions)"),
    "seq_len past the checkpoint": ("name: s\nmodels: [{name: mine, path: ckpt}]\n"
                                    "seq_lens: [65]\n", None,
                                    "sweep.yaml:3: seq_lens[0]: 65 is longer than model 'mine' "
                                    "allows (64 positions)"),
    "infinite timeout": (GOOD_SWEEP + "timeout_s: .inf\n", None,
                         "sweep.yaml:3: timeout_s: inf is not a finite number"),
    "a timeout over a day": (GOOD_SWEEP + "timeout_s: 86401\n", None,
                             "sweep.yaml:3: timeout_s: Input should be less than or equal"),
    "NaN seconds": (GOOD_SWEEP + "measure: {min_seconds: .nan}\n", None,
                    "sweep.yaml:3: measure.min_seconds: nan is not a finite number"),
    "infinite cpus": (None, "devices:\n  - {name: a, kind: cgroup, memory: 1GiB, cpus: .inf}\n",
                      "inventory.yaml:2: devices[0].cpus: inf is not a finite number"),
    "more cpus than this host": (None, "devices:\n  - {name: a, kind: cgroup, memory: 1GiB, "
                                 f"cpus: {host_cpus() + 1}}}\n",
                                 f"inventory.yaml:2: devices[0].cpus: {host_cpus() + 1} CPUs is "
                                 "more than this host's"),
    "memory of 10**30": (None, "devices:\n  - {name: a, kind: cgroup, memory: " + "1" + "0" * 30
                         + "}\n", "inventory.yaml:2: devices[0].memory: 1000000000000000000000"
                         "000000000 is more memory than any machine has"),
    "more memory than this host": (None, "devices:\n  - {name: a, kind: cgroup, memory: "
                                   f"{_more_memory_than_this_host()}}}\n",
                                   "inventory.yaml:2: devices[0].memory: "),
    "boolean local cpus": (None, "devices:\n  - {name: a, kind: local, cpus: true}\n",
                           "inventory.yaml:2: devices[0].cpus: true is not a number"),
    "infinite ssh timeout": (None, "devices:\n  - {name: a, kind: jetson, host: h, "
                             "connect_timeout_s: .inf}\n",
                             "inventory.yaml:2: devices[0].connect_timeout_s: inf is not"),
    "GLUE file with a NUL": ("name: s\nmodels: [bert-tiny]\ntasks: [sst2]\ndata_dir: glue\n",
                             None, "glue/SST-2/dev.tsv:3: (file): a NUL byte in this line"),
    "GLUE row with a tab in a text": ("name: s\nmodels: [bert-tiny]\ntasks: [sst2]\n"
                                      "data_dir: glue\n", None,
                                      "glue/SST-2/dev.tsv:2: (line): 3 tab-separated columns"),
}
GLUE_FILES = {"GLUE file with a NUL": b"sentence\tlabel\ngood\t1\nb\x00ad\t0\n",
              "GLUE row with a tab in a text": b"sentence\tlabel\ngo\tod\t1\nbad\t0\n"}


def _write(path: Path, content) -> None:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


def _case_folder(folder: Path, name: str) -> Path:
    sweep, inventory, _ = CASES[name]
    _write(folder / "sweep.yaml", GOOD_SWEEP if sweep is None else sweep)
    _write(folder / "inventory.yaml", GOOD_INVENTORY if inventory is None else inventory)
    (folder / "ckpt").mkdir()
    (folder / "ckpt" / "config.json").write_text(
        '{"model_type": "bert", "max_position_embeddings": 64}')
    if name in GLUE_FILES:
        (folder / "glue" / "SST-2").mkdir(parents=True)
        _write(folder / "glue" / "SST-2" / "dev.tsv", GLUE_FILES[name])
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith("farm.db")}


def _refused_in_one_line(done: subprocess.CompletedProcess, code: int, words: str) -> None:
    assert done.returncode == code, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr  # the error, and its fix
    assert lines[0].startswith("error: ") and words in lines[0], lines[0]
    assert lines[1].startswith("hint: ") and len(lines[1]) > len("hint: ")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_refused_in_one_line_before_the_database(tmp_path, name):
    folder = _case_folder(tmp_path, name)
    Store(str(folder / "farm.db")).close()  # a database that holds what earlier runs wrote
    before = _snapshot(folder)
    started = time.monotonic()
    done = _farm("submit", "sweep.yaml", "--db", "farm.db", cwd=folder)
    _refused_in_one_line(done, 2, CASES[name][2])
    assert time.monotonic() - started < 20  # the alias bomb took minutes, and gigabytes
    assert _snapshot(folder) == before


@pytest.mark.parametrize("name", ["alias bomb", "huge batch", "more memory than this host"])
def test_refused_input_creates_no_database(tmp_path, name):
    folder = _case_folder(tmp_path, name)
    done = _farm("submit", "sweep.yaml", "--db", "new.db", cwd=folder)
    _refused_in_one_line(done, 2, CASES[name][2])
    assert not list(folder.glob("new.db*"))


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def test_a_database_from_a_newer_farm_is_refused_untouched(tmp_path):
    _case_folder(tmp_path, "duplicate key")
    (tmp_path / "sweep.yaml").write_text(GOOD_SWEEP)
    Store(str(tmp_path / "farm.db")).close()
    with contextlib.closing(sqlite3.connect(tmp_path / "farm.db")) as db, db:
        db.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    before = _snapshot(tmp_path)
    done = _farm("submit", "sweep.yaml", "--db", "farm.db", cwd=tmp_path)
    _refused_in_one_line(done, 4, f"the database at {tmp_path / 'farm.db'} was written by a "
                         "newer farm (revision 0099_from_the_future)")
    assert done.stderr.strip().splitlines()[1] == "hint: upgrade farm"
    assert _snapshot(tmp_path) == before


_MIGRATE = """
import sys, time
from farm.store import Store
folder, start, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
for round_ in range(rounds):
    while time.time() < start + 0.4 * round_:  # both farms open round_'s file at one moment
        pass
    Store(f"{folder}/farm{round_}.db").close()
"""


def test_two_farms_creating_one_database_at_once_both_succeed(tmp_path):
    """Both find the file empty and create its tables; without a lock the second one's CREATE
    TABLE fails ("table sweeps already exists"), and without waiting out the first one's lock
    when switching the file to WAL it fails with "database is locked" (SQLite calls no busy
    handler there): about one round in five before the fix."""
    rounds = 20
    start = f"{time.time() + 3:.3f}"  # after both have imported farm
    farms = [subprocess.Popen([sys.executable, "-c", _MIGRATE, str(tmp_path), start, str(rounds)],
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for farm in farms:
        _, stderr = farm.communicate(timeout=120)
        assert farm.returncode == 0, stderr
    for round_ in range(rounds):
        with contextlib.closing(sqlite3.connect(tmp_path / f"farm{round_}.db")) as db:
            assert db.execute("SELECT version_num FROM alembic_version").fetchall() == \
                [(_head(),)]
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize("folder", ["a?b", "c#d", "e%41f"])
def test_database_paths_keep_their_question_marks(tmp_path, folder):
    (tmp_path / "inventory.yaml").write_text(GOOD_INVENTORY)
    (tmp_path / folder).mkdir()
    db = f"{folder}/farm.db"
    done = _farm("devices", "release", "a", "--db", db, cwd=tmp_path)  # opens (creates) it
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / folder / "farm.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["inventory.yaml", folder])
    done = _farm("sql", "SELECT version_num FROM alembic_version", "--csv", "--db", db,
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["version_num", _head()]
