"""`farm submit --dry-run`: the jobs per target, those already finished, the model groups and
an estimate from earlier results of the same jobs, read from a real database that it never
writes (nor creates)."""
from __future__ import annotations

import hashlib

import pytest
from typer.testing import CliRunner

from farm.cli import app
from farm.errors import ConfigError
from farm.inventory import load_inventory
from farm.plan import dry_run
from farm.results import Status
from farm.store import Store
from farm.sweep import expand, load_sweep, read_data, resolve_targets

INVENTORY = ("devices:\n"
             "  - {name: emu-1, kind: local, tags: [pool]}\n"
             "  - {name: emu-2, kind: local, tags: [pool]}\n"
             "  - {name: solo, kind: local}\n")
SWEEP = ("name: {name}\ndevices: [pool, solo]\nmodels: [bert-tiny, bert-mini]\n"
         "variants: [fp32, int8]\nbatch_sizes: [1, 8]\n")


def _files(write_yaml, name="planned", folder=""):
    return (write_yaml(f"{folder}sweep.yaml", SWEEP.format(name=name)),
            write_yaml("inventory.yaml", INVENTORY))


def _run_some(db_url, sweep_file, inventory_file, times: dict[tuple, float], load_s: float):
    """Store the sweep as a submit does and finish the jobs named in `times` ((target, model,
    variant, batch) -> agent seconds) done, each group's first job reporting its load."""
    inventory, sweep = load_inventory(inventory_file), load_sweep(sweep_file)
    pools = resolve_targets(sweep, inventory, str(sweep_file), str(inventory_file))
    jobs = expand(sweep, list(pools), read_data(sweep))
    store = Store(db_url)
    try:
        submitted = store.add_sweep(sweep, str(sweep_file.resolve()), inventory, jobs)
        chosen = {j.key: seconds for j in jobs for (target, model, variant, batch), seconds
                  in times.items() if (j.target, j.model.name, j.variant.name, j.batch_size)
                  == (target, model, variant, batch)}
        loaded = set()
        for queued in store.runnable_jobs(submitted.id, set(chosen)):
            device = "solo" if queued.target == "solo" else "emu-1"
            group = (queued.target, queued.spec["model"]["name"], queued.spec["variant"])
            load = None if group in loaded else {
                "load_key": hashlib.sha256(repr(group).encode()).hexdigest()[:16],
                "model": queued.spec["model"], "variant": queued.spec["variant"],
                "load_s": load_s}
            loaded.add(group)
            store.job_started(queued.id, device)
            store.job_finished(queued.id, {
                "status": Status.DONE, "device": device, "started_at": 1000.0,
                "finished_at": 1001.0, "error": None,
                "result": {"per_sample_ms": 1.0, "job_s": chosen[queued.key], "load": load}})
    finally:
        store.close()


def test_a_new_database_is_neither_written_nor_created(write_yaml, tmp_path):
    sweep_file, inventory_file = _files(write_yaml)
    db = tmp_path / "none" / "farm.db"
    plan = dry_run(sweep_file, inventory_file, f"sqlite:///{db}")
    assert [(t.target, t.devices, t.jobs, t.finished, t.groups, t.estimate_s)
            for t in plan.targets] == [("pool", ("emu-1", "emu-2"), 8, 0, 4, None),
                                       ("solo", ("solo",), 8, 0, 4, None)]
    assert plan.groups == ("bert-tiny fp32", "bert-tiny int8", "bert-mini fp32",
                           "bert-mini int8")
    assert not db.parent.exists()


def test_finished_jobs_and_an_estimate_from_earlier_results(write_yaml, tmp_path, db_url):
    sweep_file, inventory_file = _files(write_yaml)
    # Finished in this sweep: two solo jobs. Run in another sweep (another file, another name,
    # the same jobs, so the same keys): three pool jobs of two groups.
    _run_some(db_url, sweep_file, inventory_file,
              {("solo", "bert-tiny", "fp32", 1): 4.0, ("solo", "bert-tiny", "fp32", 8): 6.0},
              load_s=3.0)
    other_file, _ = _files(write_yaml, name="earlier", folder="earlier-")
    _run_some(db_url, other_file, inventory_file,
              {("pool", "bert-tiny", "fp32", 1): 2.0, ("pool", "bert-tiny", "fp32", 8): 4.0,
               ("pool", "bert-mini", "int8", 1): 6.0}, load_s=5.0)
    before = (tmp_path / "farm.db").read_bytes()

    pool, solo = dry_run(sweep_file, inventory_file, db_url).targets
    assert (solo.jobs, solo.finished, solo.to_run, solo.groups) == (8, 2, 6, 3)
    assert (solo.estimated, solo.estimate_s) == (0, None)  # the solo jobs left never ran
    assert (pool.jobs, pool.finished, pool.to_run, pool.groups) == (8, 0, 8, 4)
    # (2 + 4 + 6 agent seconds + two groups' loads of 5 s, each on at most as many devices as
    # it has jobs: bert-tiny fp32 on both, bert-mini int8 on one) over the pool's 2 devices
    assert pool.estimated == 3
    assert pool.estimate_s == pytest.approx((2 + 4 + 6 + 5 * 2 + 5 * 1) / 2)
    assert (tmp_path / "farm.db").read_bytes() == before  # nothing written

    shown = CliRunner().invoke(app, ["submit", str(sweep_file), "--dry-run", "-i",
                                     str(inventory_file), "--db", db_url])
    assert shown.exit_code == 0, shown.output
    assert "14 s (for 3 of 8)" in shown.output and "no earlier results" in shown.output


def test_a_name_another_file_holds_is_refused_as_submit_refuses_it(write_yaml, db_url):
    sweep_file, inventory_file = _files(write_yaml)
    _run_some(db_url, sweep_file, inventory_file, {}, load_s=1.0)
    copy = write_yaml("other.yaml", SWEEP.format(name="planned") + "seq_lens: [64]\n")
    with pytest.raises(ConfigError) as refused:
        dry_run(copy, inventory_file, db_url)
    assert "submitted from another file" in str(refused.value)
