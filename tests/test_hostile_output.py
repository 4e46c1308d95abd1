"""What farm prints and reads back, against hostile text: Rich markup and terminal control
characters in names, files and database values; `farm sql` statements that would write a file,
run forever, or ignore Ctrl-C; and farm's private Ray as another process on the network sees it."""
from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from farm.console import shown, visible
from farm.results_view import results_table

FARM = str(Path(sys.executable).parent / "farm")
RELEASE_DB = Path(__file__).parent / "data" / "release-0.1" / "farm.db"
FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def _farm(*args, cwd=None, timeout=120):
    return subprocess.run([FARM, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def results_db(tmp_path) -> Path:
    """A copy of a real results database, with a device whose name and error are hostile."""
    path = tmp_path / "farm.db"
    path.write_bytes(RELEASE_DB.read_bytes())
    with sqlite3.connect(path) as db:
        db.execute("UPDATE devices SET last_error = ? WHERE rowid = (SELECT min(rowid) FROM "
                   "devices)", ("\x1b[2J\x1b]0;owned\x07[/bold][red]x",))
    return path


def test_visible_writes_out_every_control_character_and_keeps_the_rest():
    assert visible("a\x1b[31mb\x07\x7f\x9b\u202e") == "a\\x1b[31mb\\x07\\x7f\\x9b\\u202e"
    assert visible("two\nlines\tand tab") == "two\nlines\tand tab"
    assert visible("two\nlines\r", lines=False) == "two\\nlines\\r"
    assert visible("ünïcode ✓ [x]") == "ünïcode ✓ [x]"
    assert visible(None) == ""


def _rendered(renderable) -> str:
    console = Console(width=300, record=True, file=open(os.devnull, "w"), color_system=None)
    console.print(renderable)
    return console.export_text()


def test_names_that_look_like_markup_print_as_themselves():
    hostile = "[/bold]"
    row = {"model": "[bold]m", "variant": hostile, "task": "synthetic", "seq_len": 8,
           "batch_size": 1, "device": "d\x1b[31m", "status": "done", "p50_ms": 1.0,
           "per_sample_ms": 1.0, "peak_mem_mb": 1.0, "flops": 1e9, "params": 1e6}
    text = _rendered(results_table(f"sweep {shown('[s]')}", [row]))
    assert "[/bold]" in text and "[bold]m" in text and "sweep [s]" in text
    assert "d\\x1b[31m" in text and "\x1b" not in text


def test_farm_sql_shows_markup_and_control_characters_as_text(results_db):
    done = _farm("sql", "SELECT '[/bold]' AS a, char(27) || '[31mred' || char(7) AS b, "
                 "'x' || char(10) || 'y' AS c", "--db", str(results_db))
    assert done.returncode == 0, done.stderr
    assert "[/bold]" in done.stdout
    assert "\\x1b[31mred\\x07" in done.stdout and "x\\ny" in done.stdout
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout

    devices = _farm("sql", "SELECT last_error FROM devices WHERE last_error IS NOT NULL",
                    "--db", str(results_db))
    assert devices.returncode == 0 and "\x1b" not in devices.stdout
    assert "\\x1b[2J\\x1b]0;owned\\x07[/bold][red]x" in devices.stdout


@pytest.mark.parametrize("statement", [
    "ATTACH DATABASE '{dir}/new.db' AS n",
    "VACUUM INTO '{dir}/copy.db'",
    "attach '{dir}/new.db' as n",
])
def test_farm_sql_refuses_to_attach_or_vacuum_before_any_file_is_made(results_db, statement):
    before, files = _digest(results_db), set(results_db.parent.iterdir())
    done = _farm("sql", statement.format(dir=results_db.parent), "--db", str(results_db))
    assert done.returncode == 2
    first = done.stderr.splitlines()[0]
    assert first.startswith("error: farm sql is read-only: ATTACH and VACUUM are refused")
    assert set(results_db.parent.iterdir()) == files  # no new file, not even an empty one
    assert _digest(results_db) == before


def test_a_query_that_runs_forever_stops_at_its_timeout(results_db):
    started = time.monotonic()
    done = _farm("sql", FOREVER, "--timeout", "1", "--db", str(results_db))
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == "error: the query ran longer than 1 s and was stopped"
    assert time.monotonic() - started < 30


def test_ctrl_c_stops_a_running_query(results_db):
    farm = subprocess.Popen([FARM, "sql", FOREVER, "--db", str(results_db)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(4)  # the CLI is up and SQLite is counting
    assert farm.poll() is None
    sent = time.monotonic()
    farm.send_signal(signal.SIGINT)
    _, err = farm.communicate(timeout=30)
    assert farm.returncode == 130
    assert err.splitlines()[0] == "error: the query was interrupted (Ctrl-C); nothing was changed"
    assert time.monotonic() - sent < 10


def test_an_error_naming_a_file_with_brackets_is_one_plain_line(tmp_path):
    sweep = tmp_path / "[" / "b]sweep.yaml"  # the path holds "[/b]", a closing tag
    sweep.parent.mkdir()
    sweep.write_text("name: [unclosed\n")
    (tmp_path / "inventory.yaml").write_text("devices:\n  - {name: here, kind: local}\n")
    done = _farm("submit", str(sweep), "--db", str(tmp_path / "farm.db"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "[/b]sweep.yaml" in done.stderr.splitlines()[0]
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert not (tmp_path / "farm.db").exists()


def test_farms_private_ray_refuses_a_client_without_its_token():
    """Ray 2.60 cannot listen on loopback only (it turns 127.0.0.1 into the host's address and
    binds its gRPC servers to every interface), so what guards farm's private instance is Ray's
    token authentication: a process without the token is refused at the GCS."""
    import ray

    from farm.api import ray_connection
    from farm.inventory import Inventory

    inventory = Inventory.model_validate({"devices": [{"name": "here", "kind": "local"}]})
    with ray_connection(None, inventory):
        address = ray.get_runtime_context().gcs_address
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        env["HOME"] = "/nonexistent"  # no ~/.ray/auth_token either
        stranger = subprocess.Popen(
            [sys.executable, "-c", f"import ray; ray.init(address={address!r}); print('in')"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        refused, seen = False, []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not refused:
            line = stranger.stdout.readline()
            if not line:
                break
            seen.append(line)
            refused = "InvalidAuthToken" in line or "Unauthenticated" in line
        stranger.kill()
        stranger.wait()
    assert refused, "".join(seen[-5:])
    assert not any(line.strip() == "in" for line in seen)
