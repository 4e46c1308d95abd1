"""The agent as the controller sees it: a real process speaking JSON lines."""
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time

import pytest

from agents import content_hash
from agents.measure import percentile, summarize
from conftest import QUICK, REPO
from farm.devices.process import agent_env


def _agent(commands, *, extra_env=None):
    env = dict(agent_env(1), **(extra_env or {}))
    lines = "".join(json.dumps(c) + "\n" for c in commands)
    done = subprocess.run([sys.executable, "-m", "agents"], input=lines, capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    return events, done.stderr


def test_load_once_run_twice_with_every_figure():
    load = {"op": "load", "model": {"name": "bert-tiny"}, "variant": "fp32", "threads": 1,
            "seq_lens": [16, 32]}
    runs = [{"op": "run", "job": {"key": f"k{b}", "task": "synthetic", "batch_size": b,
                                  "seq_len": 32, "measure": QUICK}} for b in (1, 4)]
    events, stderr = _agent([load, *runs, {"op": "exit"}])
    kinds = [e["event"] for e in events]
    assert kinds[0] == "hello" and kinds[-1] == "bye", stderr
    assert kinds.count("loaded") == 1 and kinds.count("result") == 2
    hello = events[0]
    assert hello["agent"] == content_hash() and hello["env"]["python"]
    results = [e for e in events if e["event"] == "result"]
    for result, batch in zip(results, (1, 4)):
        lat = sorted(result["latencies_ms"])
        assert result["iters"] == len(lat) >= QUICK["min_iters"]
        assert result["p50_ms"] == pytest.approx(statistics.median(lat), rel=1e-4)
        assert result["per_sample_ms"] == pytest.approx(result["mean_ms"] / batch)
        assert result["params"] == 4386178  # bert-tiny with a 2-label head
        assert result["flops"] > 0 and result["process_peak_mb"] > 0
        assert result["window_s"] >= QUICK["min_seconds"]


def test_failures_become_events_and_the_agent_goes_on():
    events, _ = _agent([
        {"op": "load", "model": {"name": "no-such-model"}, "variant": "fp32"},
        {"op": "load", "model": {"name": "bert-tiny"}, "variant": "int8", "seq_lens": [8]},
        {"op": "run", "job": {"key": "k", "task": "synthetic", "batch_size": 1, "seq_len": 8,
                              "measure": QUICK}},
        {"op": "exit"}])
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1 and "no-such-model" in errors[0]["message"]
    assert errors[0]["kind"] == "model"
    assert any(e["event"] == "result" and e["job"] == "k" for e in events)


def test_one_import_turn_per_core_freed_when_its_holder_dies(tmp_path):
    """Two agents cannot import at once on a one-core host; a killed holder frees its turn."""
    from agents import imports

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from agents import imports\n"
         f"with imports.turn({str(tmp_path)!r}, 1):\n print('held', flush=True); time.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        taken = threading.Event()

        def take():
            with imports.turn(str(tmp_path), 1):
                taken.set()

        threading.Thread(target=take, daemon=True).start()
        assert not taken.wait(1.0), "a second import ran while the only turn was held"
    finally:
        holder.kill()
        holder.wait()
    assert taken.wait(5.0), "the turn of a killed agent was not freed"


def test_the_wait_for_an_import_turn_is_not_part_of_load_s():
    """Every turn of this host held for 3 s: the agent waits, and its load_s starts after."""
    from agents import imports

    hold_s, turns = 3.0, []
    for _ in range(imports.slots()):
        turns.append(imports.turn())
        turns[-1].__enter__()
    threading.Timer(hold_s, lambda: [t.__exit__(None, None, None) for t in turns]).start()
    started = time.monotonic()
    events, stderr = _agent([{"op": "load", "model": {"name": "bert-tiny"}, "variant": "fp32",
                              "seq_lens": [8]}, {"op": "exit"}])
    wall = time.monotonic() - started
    loaded = [e for e in events if e["event"] == "loaded"]
    assert loaded, stderr
    assert wall > hold_s
    assert loaded[0]["load_s"] < wall - hold_s + 0.5, (loaded[0]["load_s"], wall)


def test_the_agent_imports_no_scipy_that_transformers_would_pull_in():
    """transformers imports scipy.optimize where scipy is installed (it is, for farm's
    statistics); the agent hides it, and its BERT still loads (the tests above run it)."""
    import importlib.util

    assert importlib.util.find_spec("scipy") is not None  # there to be found, and not found:
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from agents import imports; imports.leave_out_unused()\n"
         "import torch, transformers.models.bert.modeling_bert\n"
         "from transformers.utils import is_scipy_available\n"
         "print(is_scipy_available(), sorted(n for n, m in sys.modules.items()"
         " if n.split('.')[0] == 'scipy' and m is not None))"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.split("\n")[0] == "False []", done.stdout + done.stderr


def test_stray_output_cannot_break_the_event_stream():
    script = ("import os, sys; from agents.protocol import Channel; c = Channel(); "
              "print('stray'); os.write(1, b'C-level noise\\n'); sys.stdout.flush(); "
              "c.emit('hello', x=1)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO)
    assert [json.loads(line) for line in done.stdout.splitlines()] == [{"event": "hello", "x": 1}]
    assert "stray" in done.stderr and "C-level noise" in done.stderr


def test_percentiles_match_numpy_linear_interpolation():
    numpy = pytest.importorskip("numpy")
    values = sorted(random.Random(4).uniform(1, 50) for _ in range(37))
    for q in (0, 50, 90, 95, 99, 100):
        assert percentile(values, q) == pytest.approx(float(numpy.percentile(values, q)))
    summary = summarize([v / 1000 for v in values], batch_size=4, window_s=1.0)
    assert summary["throughput"] == pytest.approx(4 * 37 / (sum(values) / 1000))


def test_agent_source_is_python36():
    vermin = shutil.which("vermin", path=os.path.dirname(sys.executable))
    assert vermin, "vermin is installed with farm's test extras"
    done = subprocess.run([vermin, "--target=3.6-", "--no-tips", "--violations",
                           "--eval-annotations", str(REPO / "agents")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr


FAKES_DIR = REPO / "tests" / "fakes"


def _show(env: dict) -> str:
    return subprocess.run([str(FAKES_DIR / "jetson_clocks"), "--show"], capture_output=True,
                          text=True, env=dict(os.environ, **env), check=True).stdout


def test_power_mode_and_clocks_are_read_from_the_tools_output():
    from agents.environment import clocks_locked, power_mode

    assert power_mode("NV Power Mode: MAXN\n0\n") == ("MAXN", "0")
    assert power_mode("NVPM WARN: fan mode is not set!\nNV Power Mode: 5W\n1\n") == ("5W", "1")
    assert power_mode("") == (None, None)
    assert clocks_locked(_show({"FAKE_JETSON_CLOCKS": "locked"})) is True
    assert clocks_locked(_show({})) is False
    # 5 W mode after jetson_clocks: two CPUs offline; EMC keeps its range (FreqOverride=1).
    five_watt = "\n".join([
        "cpu0: Online=1 Governor=schedutil MinFreq=921600 MaxFreq=921600 CurrentFreq=921600 ",
        "cpu2: Online=0 Governor=schedutil MinFreq=102000 MaxFreq=921600 CurrentFreq=921600 ",
        "GPU MinFreq=614400000 MaxFreq=614400000 CurrentFreq=614400000",
        "EMC MinFreq=204000000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=1"])
    assert clocks_locked(five_watt) is True
    assert clocks_locked("jetson_clocks: permission denied") is None
