"""Figures a reviewer would check: FLOPs and parameters against torch, int8 against fp32, peaks
that do not carry over between jobs, energy from the board's own power readings, and the agent
on the Jetson Nano's software stack."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agents import flops, models
from agents.catalog import CATALOG
from conftest import QUICK, QUICK_P50, REPO, farm_cli
from farm.api import submit

FAKES = REPO / "tests" / "fakes"


def _rows(db_url, sql="select * from v_results"):
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql)]


def _device(write_yaml, *names, **extra):
    return write_yaml("inventory.yaml", {"devices": [
        {"name": name, "kind": "cgroup", "memory": "2GiB", "cpus": 1, **extra} for name in names]})


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_analytic_flops_equal_torchs_counter(name):
    """The count used on torch 1.10 (no flop counter there) agrees with torch's own."""
    model = models.build({"name": name})
    for batch, seq in ((1, 128), (2, 48)):
        inputs = models.synthetic_inputs(model, batch, seq)
        counted, method = flops.count(model, inputs)
        assert method == flops.COUNTER
        assert flops.analytic(model, inputs) == pytest.approx(counted, rel=0.02)
    if name == "bert-base":
        assert round(models.parameter_count(model) / 1e6, 2) == 109.48
        # 2 x 85.0M encoder/head weights x 128 tokens, plus attention's 4 s^2 d per layer
        assert counted_at(model, 1, 128) == 21744454656 + 12 * 4 * 128 * 128 * 768


def counted_at(model, batch, seq):
    return flops.count(model, models.synthetic_inputs(model, batch, seq))[0]


def _agent_loading(names: list[str]) -> subprocess.CompletedProcess:
    """An agent that builds and runs each of `names` in turn."""
    commands = []
    for name in names:
        commands += [
            # 16 tokens: that every entry builds, counts and runs is the point, not its speed
            {"op": "load", "model": {"name": name}, "variant": "fp32", "threads": 2,
             "seq_lens": [16]},
            {"op": "run", "job": {"key": name, "task": "synthetic", "batch_size": 1,
                                  "seq_len": 16, "measure": {"warmup": 0, "min_iters": 1,
                                                              "min_seconds": 0}}}]
    lines = "".join(json.dumps(c) + "\n" for c in commands + [{"op": "exit"}])
    return subprocess.run([sys.executable, "-m", "agents"], input=lines, capture_output=True,
                          text=True, cwd=REPO, timeout=600)


def test_every_catalog_entry_runs_in_the_agent():
    from concurrent.futures import ThreadPoolExecutor

    # Two agents at once, half the catalog each: building a model is one core's work.
    names = sorted(CATALOG)
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(_agent_loading, [names[0::2], names[1::2]]))
    events = [json.loads(line) for agent in done for line in agent.stdout.splitlines()]
    stderr = "".join(agent.stderr[-1000:] for agent in done)
    results = {e["job"]: e for e in events if e["event"] == "result"}
    errors = [e for e in events if e["event"] == "error"]
    assert not errors and sorted(results) == sorted(CATALOG), errors or stderr
    for name, result in results.items():
        assert result["mean_ms"] > 0 and result["flops"] > 0 and result["params"] > 0, name
        # one timed call: no percentile has an interval, so none is reported
        assert result["p50_ms"] is None and "p50 needs 6" in result["percentile_note"], name


def test_int8_bert_base_is_faster_and_smaller_than_fp32(cgroups, write_yaml, db_url,
                                                        device_names):
    inventory = _device(write_yaml, device_names(1)[0])  # one: neither window beside the other
    sweep = {"name": "int8", "models": ["bert-base"], "variants": ["fp32", "int8"],
             "batch_sizes": [1], "seq_lens": [128],
             "measure": {"warmup": 1, "min_iters": 6, "min_seconds": 1}}  # p50 needs 6
    assert submit(write_yaml("sweep.yaml", sweep), inventory, db=db_url).counts == {"done": 2}
    rows = {r["variant"]: r for r in _rows(db_url)}
    fp32, int8 = rows["fp32"], rows["int8"]
    assert int8["p50_ms"] < fp32["p50_ms"]
    assert int8["peak_mem_mb"] < fp32["peak_mem_mb"]
    assert int8["load_container_peak_mb"] < 2048 and fp32["params"] == 109483778
    assert fp32["flops"] == int8["flops"] == 21744454656 + 12 * 4 * 128 * 128 * 768
    assert fp32["flops_method"] == "torch.utils.flop_counter"


def test_a_small_batch_after_a_large_one_reports_its_own_peak(cgroups, write_yaml, db_url,
                                                               device_names):
    inventory = _device(write_yaml, device_names(1)[0])
    sweep = {"name": "peaks", "models": ["bert-small"], "batch_sizes": [16, 1],
             "seq_lens": [128], "measure": QUICK}
    assert submit(write_yaml("sweep.yaml", sweep), inventory, db=db_url).counts == {"done": 2}
    rows = sorted(_rows(db_url), key=lambda r: r["started_at"])
    large, small = rows
    assert (large["batch_size"], small["batch_size"]) == (16, 1)
    assert large["load_id"] == small["load_id"] is not None  # one load served the group
    assert len(_rows(db_url, "select * from model_loads")) == 1
    assert small["container_peak_mb"] < large["container_peak_mb"]
    assert small["process_peak_mb"] < large["process_peak_mb"]


def test_energy_comes_from_the_boards_power_readings(cgroups, write_yaml, db_url, device_names,
                                                     monkeypatch):
    """tegrastats (a stand-in printing the Nano's exact lines at 4000 mW) on the agent's PATH."""
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_POM_5V_IN", "4000")
    inventory = _device(write_yaml, device_names(1)[0])
    sweep = {"name": "energy", "models": ["bert-mini"], "batch_sizes": [1, 4], "seq_lens": [64],
             "measure": {"warmup": 1, "min_iters": 5, "min_seconds": 1.0}}
    assert submit(write_yaml("sweep.yaml", sweep), inventory, db=db_url).counts == {"done": 2}
    for r in _rows(db_url):
        assert r["energy_source"] == "tegrastats:POM_5V_IN"
        assert r["avg_power_mw"] == 4000 and r["idle_power_mw"] == 4000
        assert r["board_ram_peak_mb"] == 1200
        samples = r["iters"] * r["batch_size"]
        assert r["energy_mj"] == pytest.approx(4000 * r["window_s"] / samples)
        # energy per sample = power x time per sample
        assert r["energy_mj"] == pytest.approx(4.0 * r["per_sample_ms"], rel=0.05)
        # The board's clocks and heat, from the same lines: steady, so not throttled.
        assert (r["clock_source"], r["temp_source"]) == ("tegrastats", "tegrastats CPU")
        assert r["cpu_mhz_start"] == r["cpu_mhz_end"] == r["cpu_mhz_min"] == 1479
        assert r["gpu_mhz_start"] == r["gpu_mhz_min"] == 921
        assert r["temp_c_start"] == r["temp_c_end"] == r["temp_c_max"] == 33.5
        assert r["throttled"] == 0
    status = farm_cli("status", "--once", "--db", db_url, timeout=60,
                      env={**os.environ, "COLUMNS": "200"})
    assert status.returncode == 0, status.stderr
    assert "33.5 °C" in status.stdout  # the board's temperature, in the devices table


def test_no_power_source_means_no_energy_figure(cgroups, write_yaml, db_url, device_names):
    if Path("/sys/class/powercap").exists():
        pytest.skip("this machine has RAPL counters, so energy is measured here")
    inventory = _device(write_yaml, device_names(1)[0])
    sweep = {"name": "none", "models": ["bert-tiny"], "seq_lens": [16], "measure": QUICK}
    submit(write_yaml("sweep.yaml", sweep), inventory, db=db_url)
    row = _rows(db_url)[0]
    assert (row["energy_mj"], row["avg_power_mw"], row["energy_source"]) == (None, None, None)


def test_the_agent_runs_on_the_jetson_software_stack(cgroups, write_yaml, db_url, device_names,
                                                     jetson_python):
    # two devices: the two loads (each an import of torch 1.10) at once
    inventory = _device(write_yaml, *device_names(2), python=jetson_python)
    sweep = {"name": "jetson", "models": ["bert-tiny"], "variants": ["fp32", "int8"],
             "batch_sizes": [1], "seq_lens": [128], "measure": QUICK_P50}
    assert submit(write_yaml("sweep.yaml", sweep), inventory, db=db_url).counts == {"done": 2}
    expected = counted_at(models.build({"name": "bert-tiny"}), 1, 128)
    for r in _rows(db_url, "select r.*, j.variant from results r join jobs j on j.id = r.job_id"):
        env = json.loads(r["env_json"])
        assert env["python"] == "3.6.15"
        assert env["torch"].startswith("1.10.2") and env["transformers"] == "4.18.0"
        assert r["flops_method"] == "analytic" and r["flops"] == expected
        assert r["p50_ms"] > 0 and r["params"] == 4386178


def _save_tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertForSequenceClassification
    config = BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
                        intermediate_size=128, vocab_size=1000, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_local_checkpoints_and_cached_hub_ids_run(write_yaml, db_url, tmp_path, monkeypatch,
                                                  device_names):
    """A saved checkpoint by path:, and the same as a hub id found in an offline cache."""
    checkpoint = _save_tiny_bert(tmp_path / "ckpt")
    # The Hugging Face cache layout: models--ORG--NAME/{refs/main, snapshots/REVISION/...}
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub-cache" / "models--farmtest--tiny-bert"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots").mkdir()
    shutil.copytree(checkpoint, repo / "snapshots" / revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    inventory = write_yaml("inventory.yaml", {"devices": [  # two: the two loads at once
        {"name": name, "kind": "local", "cpus": 1} for name in device_names(2)]})
    sweep = {"name": "own", "models": [{"name": "mine", "path": "ckpt"},
                                       {"name": "cached", "hub": "farmtest/tiny-bert"}],
             "seq_lens": [16], "measure": QUICK}
    assert submit(write_yaml("sweep.yaml", sweep), inventory, db=db_url).counts == {"done": 2}
    rows = {r["model"]: r for r in _rows(db_url)}
    from transformers import BertForSequenceClassification
    expected = models.parameter_count(BertForSequenceClassification.from_pretrained(checkpoint))
    assert rows["mine"]["params"] == rows["cached"]["params"] == expected
    assert rows["mine"]["score"] is None  # synthetic inputs: no accuracy, whatever the weights
    paths = {r["model"]: r["model_path"]
             for r in _rows(db_url, "select model, model_path from jobs")}
    assert paths == {"mine": str(checkpoint), "cached": "hub:farmtest/tiny-bert"}


def _jobs(model: str, batch: int, seq: int, repeats: int) -> list[dict]:
    """The job, once per repeat (each repeat is its own agent process on a device)."""
    from farm.sweep import Sweep, expand

    sweep = Sweep(name="memory", models=[model], batch_sizes=[batch], seq_lens=[seq],
                  measure={"warmup": 1, "min_iters": 6, "min_seconds": 0}, repeats=repeats)
    return [dict(j.runner_spec(), key=j.key) for j in sorted(expand(sweep, ["*"]),
                                                            key=lambda j: j.repeat)]


def _drop_page_cache() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3")


def test_the_jobs_memory_is_the_same_whoever_faulted_the_page_cache_first(cgroups,
                                                                          device_names):
    """bert-mini fp32 b1 three ways: the page cache cold; warm (a fresh agent in the same
    cgroup, which was charged for the libraries it read); and after another device read them.
    The container's peak counts the page cache its cgroup was charged for, the job's own
    memory (memory_mb) does not."""
    from farm.devices.kinds.cgroup import CgroupDevice, cgroup_runner

    job, again = _jobs("bert-mini", 1, 128, repeats=2)
    first, second = (CgroupDevice(name=n, kind="cgroup", memory="2GiB", cpus=1)
                     for n in device_names(2))
    _drop_page_cache()
    results = []
    for device, jobs in ((first, (job, again)), (second, (job,))):
        runner = cgroup_runner(device)
        runner.prepare()
        try:
            outcomes = [runner.run(j, lambda event: None) for j in jobs]
        finally:
            runner.close()
        assert [o["status"] for o in outcomes] == ["done"] * len(jobs), outcomes
        results += [o["result"] for o in outcomes]
    assert results[0]["load"]["load_key"] != results[1]["load"]["load_key"]  # its own agent
    memory = [r["memory_mb"] for r in results]
    assert max(memory) <= 1.05 * min(memory), memory
    anon = [r["anon_mb"] for r in results]
    assert max(anon) <= 1.05 * min(anon), anon
    for r in results:  # the split is what the cgroup holds; the headline is the agent's peak
        assert r["memory_mb"] == r["process_peak_mb"] and r["file_mb"] >= 0
        assert r["memory_mb"] + 0.0 < r["memory_limit_mb"]
