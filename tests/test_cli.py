"""The `farm` command as a person runs it: a real process, its output and its exit code."""
from __future__ import annotations

import inspect
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from conftest import FARM, QUICK, farm_cli
from farm.cli import app
from farm.store import Store


def _commands(command, path=()):
    """(path, command) for the app and every command and group under it, as typer builds them."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _paragraphs(command) -> list[str]:
    """A command's help paragraphs as a reader sees them: one space between words (Markdown
    shows `code` without its backticks)."""
    return [" ".join(p.replace("`", "").split())
            for p in inspect.cleandoc(command.help or "").split("\n\n")]


def _help(path, columns: int) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={
        "COLUMNS": str(columns), "NO_COLOR": "1", "TERMINAL_WIDTH": None})
    assert result.exit_code == 0, (path, result.output)
    return result.output


def test_every_command_has_help_in_words():
    """Each command's --help (all of them, from the app): parameters as words (SWEEP, FILE, N),
    never a type such as <bool> or <str> or an argument in braces; at 80 and 160 columns each
    description whole; and no line broken where the docstring's lines end: at a width where
    nothing needs wrapping, each paragraph is one line, in its own page and in its group's."""
    commands = list(_commands(typer.main.get_command(app)))
    assert {("submit",), ("devices", "check"), ("exits", "fit")} <= {p for p, _ in commands}
    for path, command in commands:
        for columns in (80, 160):
            shown = _help(path, columns)
            usage = next(line for line in shown.splitlines() if "Usage:" in line)
            words = usage.split("[OPTIONS]")[1]
            assert words == words.upper() and not re.search("[{}]", usage), (path, usage)
            noise = re.findall(r"<\w[^>]*>", shown)
            assert not noise, f"farm {' '.join(path)} --help shows {noise}"
            for param in command.params:  # each word whole, never folded across two lines
                assert not param.metavar or param.metavar in shown, (path, param.metavar, shown)
            assert _paragraphs(command)[0] in " ".join(shown.replace("│", " ").split()), (
                path, columns, shown)
        wide = _help(path, 1000).splitlines()
        for paragraph in _paragraphs(command):
            assert any(paragraph in line for line in wide), (path, paragraph)
        if path:
            listed = _help(path[:-1], 1000).splitlines()
            assert any(_paragraphs(command)[0] in line for line in listed), (path, listed)


@pytest.mark.parametrize("inventory, sweep, field", [
    ("devices:\n  - name: a\n    kind: cgroup\n    memory: 2XB\n", None,
     "inventory.yaml:4: devices[0].memory"),
    ("devices:\n  - {name: a, kind: cgroup, memory: 1GiB}\n  - {name: a, kind: local}\n", None,
     "inventory.yaml:2: devices: device name 'a' appears twice"),
    (None, "name: s\nmodels: [bert-tiny]\nbatch_sizes: [0]\n", "sweep.yaml:3: batch_sizes[0]"),
    (None, "name: s\nmodels: [bert-tiny]\nvariants: [fp8]\n", "sweep.yaml:3: variants"),
    (None, "name: s\ndevices: [nano-9gb]\nmodels: [bert-tiny]\n", "sweep.yaml: devices[0]"),
    (None, "name: s\nmodels: [bert-huge]\n", "sweep.yaml:2: models"),
    (None, "name: s\nmodels: [bert-tiny]\ntasks: [squad]\n", "sweep.yaml:3: tasks"),
    (None, "name: s\nmodels: [bert-tiny\n", "sweep.yaml:3: (yaml): invalid YAML"),
    (None, "name: s\nmodels: [bert-tiny]\nretries: -1\n", "sweep.yaml:3: retries"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, inventory, sweep, field):
    """Each bad input: exit 2, one line naming the file, line and field, and not one new row in
    a database that already holds a sweep."""
    (tmp_path / "inventory.yaml").write_text(
        inventory or "devices:\n  - {name: a, kind: cgroup, memory: 1GiB}\n")
    (tmp_path / "sweep.yaml").write_text(sweep or "name: s\nmodels: [bert-tiny]\n")
    Store(f"sqlite:///{tmp_path / 'farm.db'}").close()  # an existing database, migrated
    before = _row_counts(tmp_path / "farm.db")
    done = farm_cli("submit", "sweep.yaml", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and field in lines[0]
    assert len(lines) == 2 and lines[1].startswith("hint: ")
    assert "Traceback" not in done.stderr
    assert _row_counts(tmp_path / "farm.db") == before


def test_a_bad_sweep_is_answered_before_ray_is_imported(tmp_path):
    """Checking a sweep needs neither Ray nor the controller (more than a second of imports
    that every bad input above waited for): a bad one is answered without them."""
    (tmp_path / "inventory.yaml").write_text("devices:\n  - {name: a, kind: local}\n")
    (tmp_path / "sweep.yaml").write_text("name: s\ndevices: [nano-9gb]\nmodels: [bert-tiny]\n")
    code, output, imported = _imports_of(
        ["submit", "sweep.yaml", "-i", "inventory.yaml", "--db", "sqlite:///farm.db"],
        ("ray", "farm.controller", "torch"), cwd=tmp_path)
    assert imported == [], output
    assert code == 2 and "devices[0]" in output, output


def _imports_of(args: list[str], watched: tuple[str, ...], cwd=None) -> tuple[int, str, list]:
    """A farm command run in a fresh interpreter (typer's CliRunner): its exit code, its output,
    and the modules of `watched` it imported (a package's name stands for its modules too)."""
    probe = ("import json, sys; from typer.testing import CliRunner; from farm.cli import app; "
             f"done = CliRunner().invoke(app, {list(args)!r}); watched = {tuple(watched)!r}; "
             "print(json.dumps([done.exit_code, done.output, sorted(m for m in sys.modules "
             "if m in watched or m.split('.')[0] in watched)]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stderr
    return tuple(json.loads(done.stdout.splitlines()[-1]))


def _row_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        tables = [t for (t,) in db.execute("select name from sqlite_master where type = 'table'")]
        return {t: db.execute(f"select count(*) from {t}").fetchone()[0] for t in tables}


@pytest.mark.parametrize("args, words", [
    (["table", "s", "-f", "html"], ["--format", "'html'", "rich", "markdown", "csv", "latex"]),
    (["export", "s", "--format", "xlsx"], ["--format", "'xlsx'", "csv", "json", "parquet"]),
    (["compare", "s", "--csv", "--json"], ["--csv", "--json"]),
])
def test_a_bad_option_is_one_line_before_the_database(tmp_path, args, words):
    """A value the option does not take: exit 2, one line naming the option, the value and what
    it takes, found before the database is opened (here there is none: that would say so)."""
    done = farm_cli(*args, "--db", str(tmp_path / "farm.db"), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and all(w in lines[0] for w in words), lines
    assert len(lines) == 2 and lines[1].startswith("hint: "), lines
    assert not (tmp_path / "farm.db").exists()


@pytest.mark.parametrize("args, read", [
    (["-i", "lab.yaml", "check"], "lab.yaml"),
    (["-i", "lab.yaml", "release", "a"], "lab.yaml"),
    (["-i", "lab.yaml", "check", "-i", "own.yaml"], "own.yaml"),
])
def test_devices_inventory_option_reaches_its_subcommands(tmp_path, args, read):
    """`farm devices -i FILE SUBCOMMAND` reads FILE, not ./inventory.yaml (there is none here);
    a subcommand's own -i wins. Each file is refused on line 4, which names the file read."""
    for name in ("lab.yaml", "own.yaml"):
        (tmp_path / name).write_text("devices:\n  - name: a\n    kind: cgroup\n    memory: 2XB\n")
    done = farm_cli("devices", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: {read}:4: devices[0].memory"), done.stderr


def test_resubmitting_a_finished_sweep_writes_no_rows(tmp_path):
    """The second submit of an unchanged file must not add jobs or run anything."""
    (tmp_path / "inventory.yaml").write_text("devices:\n  - {name: box, kind: local, cpus: 1}\n")
    (tmp_path / "sweep.yaml").write_text(json.dumps(
        {"name": "s", "models": ["bert-tiny"], "seq_lens": [16], "measure": QUICK}))
    first = farm_cli("submit", "sweep.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = farm_cli("submit", "sweep.yaml", cwd=tmp_path)
    assert second.returncode == 0 and "ran 0 now" in second.stdout
    with sqlite3.connect(tmp_path / "farm.db") as db:
        assert db.execute("select count(*), sum(attempts) from jobs").fetchone() == (1, 1)
        assert db.execute("select memory_limit_mb, container_peak_mb, process_peak_mb > 0 "
                          "from results").fetchone() == (None, None, 1)


def test_ctrl_c_says_so_then_cancels_running_and_queued_jobs(cgroups, tmp_path,
                                                                    device_names):
    name = device_names(1)[0]
    (tmp_path / "inventory.yaml").write_text(
        f"devices:\n  - {{name: {name}, kind: cgroup, memory: 1GiB, cpus: 1}}\n")
    (tmp_path / "sweep.yaml").write_text(json.dumps(
        {"name": "long", "models": ["bert-tiny"], "batch_sizes": [1, 2], "seq_lens": [16],
         "measure": {"warmup": 1, "min_iters": 1, "min_seconds": 300}}))
    farm = subprocess.Popen([FARM, "submit", "sweep.yaml"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while _phase(tmp_path / "farm.db") != "timing":
            assert farm.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        farm.send_signal(signal.SIGINT)
        stdout, stderr = farm.communicate(timeout=60)
    finally:
        farm.kill()
    assert farm.returncode == 130 and "interrupted" in stderr
    assert "`farm resume long`" in stderr, stderr  # the sweep's own name, ready to paste
    assert "cancelling the sweep: stopping 1 running job(s)" in stdout
    with sqlite3.connect(tmp_path / "farm.db") as db:
        statuses = sorted(s for (s,) in db.execute("select status from jobs"))
        attempts = db.execute("select status from attempts").fetchall()
    assert statuses == ["cancelled", "cancelled"] and attempts == [("cancelled",)]


def _phase(db_path: Path) -> str | None:
    try:
        with sqlite3.connect(db_path) as db:
            row = db.execute("select phase from jobs where status = 'running'").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def test_sweeps_rm_frees_a_name_and_refuses_an_unknown_one(tmp_path):
    """A database of the previous release: `farm sweeps rm` takes its sweep and every row of it
    (migrating the database first), and a name it does not hold is one line, non-zero."""
    import shutil

    db = tmp_path / "farm.db"
    shutil.copy(Path(__file__).parent / "data" / "release-0.1" / "farm.db", db)
    removed = farm_cli("sweeps", "rm", "release-0.1", "--yes", "--db", str(db), cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    assert "removed sweep release-0.1 (24 jobs)" in removed.stdout
    with sqlite3.connect(db) as connection:
        counts = [connection.execute(f"select count(*) from {t}").fetchone()[0]
                  for t in ("sweeps", "jobs", "results")]
    assert counts == [0, 0, 0]
    again = farm_cli("sweeps", "rm", "release-0.1", "--yes", "--db", str(db), cwd=tmp_path)
    assert again.returncode != 0 and "release-0.1" in again.stderr
    assert len([line for line in again.stderr.splitlines() if line.startswith("error")]) == 1


def test_the_readers_start_without_ray_or_the_controller(tmp_path):
    """farm status, sql, table, report, export and compare read the database alone: they import
    farm.readers, never Ray (most of a second before the first figure) or the controller."""
    Store(str(tmp_path / "farm.db")).close()
    code, output, imported = _imports_of(
        ["status", "--once", "--db", str(tmp_path / "farm.db")],
        ("ray", "farm.api", "farm.cluster", "farm.controller", "scipy.stats"))
    assert code == 0, output
    assert imported == []
