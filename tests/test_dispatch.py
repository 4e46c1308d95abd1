"""The queue of waiting jobs (farm.dispatch) hands devices the jobs the scheduler always chose
(the reference below is its former scan of the whole queue), and a scheduler turn's writes land
together (farm.store.Store.turn)."""
import random

import pytest
from sqlalchemy import event

from farm.controller import Scheduler, group_of, interleaved, longest_first
from farm.dispatch import PendingJobs, repeat_of
from farm.errors import StoreError
from farm.inventory import Inventory
from farm.store import QueuedJob, Store
from farm.sweep import Sweep, expand


def _job(i, model, variant, batch, target="pool", repeat=1):
    spec = {"model": {"name": model, "path": None}, "variant": variant, "task": "synthetic",
            "batch_size": batch, "seq_len": 128, "repeat": repeat}
    return QueuedJob(i, f"k{i}", target, spec)


def reference_pick(s: Scheduler, device: str, pending: list[QueuedJob]) -> QueuedJob | None:
    """The scheduler's choice as it was made before the index: a scan of every waiting job."""
    eligible = [j for j in pending if device in s.pools[j.target] and not s._avoid(j, device)]
    for r in sorted({repeat_of(j) for j in eligible}):
        in_round = [j for j in eligible if repeat_of(j) == r]
        waiting = {}
        for job in in_round:
            waiting[group_of(job)] = waiting.get(group_of(job), 0) + 1

        def held_elsewhere(job):
            return any(s.loaded.get(d) == group_of(job) for d in s.pools[job.target]
                       if d != device and d in s.live)
        for prefer in (lambda j: group_of(j) == s.loaded.get(device),
                       lambda j: not held_elsewhere(j), lambda j: waiting[group_of(j)] >= 2):
            for job in in_round:
                if prefer(job):
                    return job
    return None


def _random_sweep(rng: random.Random) -> list[QueuedJob]:
    jobs, i = [], 0
    for repeat in range(1, rng.choice((1, 1, 2, 3)) + 1):
        for model in rng.sample(["bert-tiny", "bert-mini", "bert-base"], rng.randint(1, 3)):
            for variant in rng.sample(["fp32", "int8", "fp16"], rng.randint(1, 2)):
                for batch in rng.sample([1, 2, 4, 8, 16], rng.randint(1, 4)):
                    i += 1
                    jobs.append(_job(i, model, variant, batch, rng.choice(["pool", "only-a"]),
                                     repeat))
    return jobs


@pytest.mark.parametrize("seed", range(40))
def test_the_index_hands_out_jobs_in_the_order_the_full_scan_did(seed):
    """A simulated run: devices finish in a random order, some jobs fail and are retried (back
    to the front, kept off the device that failed them), a device dies; at every step the
    index's choice is the reference's."""
    rng = random.Random(seed)
    jobs = _random_sweep(rng)
    jobs = interleaved(jobs, "s") if any(repeat_of(j) > 1 for j in jobs) else longest_first(jobs)
    devices = ["a", "b", "c"]
    s = Scheduler(None, {d: None for d in devices}, {"pool": devices, "only-a": ["a"]}, None,
                  {d: "local" for d in devices}, retries=1)
    queue, index = list(jobs), PendingJobs(jobs)
    running: dict[str, QueuedJob] = {}
    while queue:
        for device in sorted(s.live - set(running)):
            expected = reference_pick(s, device, queue)
            got = s._choose(device, index)
            assert got == expected
            if got is not None:
                queue.remove(got)
                index.take(got)
                running[device] = got
                s.loaded[device] = group_of(got)
        assert index.jobs() == queue
        if not running:
            break
        device = rng.choice(sorted(running))
        job = running.pop(device)
        if rng.random() < 0.1:  # an infrastructure failure: retried first, elsewhere
            if s.policy.attempt_ended(job.id, device, True, "lost", 1).retry:
                queue.insert(0, job)
                index.put_back(job)
        if rng.random() < 0.03 and len(s.live) > 1 and device != "a":
            s.live.discard(device)
            s.loaded.pop(device, None)


def test_a_retry_goes_first_and_the_queue_empties_as_it_is_taken():
    first, second, retried = (_job(i, "bert-tiny", "fp32", i) for i in (1, 2, 3))
    index = PendingJobs([first, second])
    index.put_back(retried)
    assert index.jobs() == [retried, first, second] and len(index) == 3
    for job in (second, retried, first):
        index.take(job)
    assert len(index) == 0 and index.jobs() == [] and index.rounds == {}


def _store_with_jobs(db_url):
    store = Store(db_url)
    sweep = Sweep(name="s", models=["bert-tiny"], batch_sizes=(1, 8))
    inventory = Inventory(devices=[{"name": "d", "kind": "local"}])
    jobs = expand(sweep, ["d"])
    submitted = store.add_sweep(sweep, "s.yaml", inventory, jobs)
    return store, store.runnable_jobs(submitted.id, {j.key for j in jobs})


def _done(device="d"):
    return {"status": "done", "device": device, "started_at": 1000.0, "finished_at": 1001.5,
            "error": None, "result": {"p50_ms": 2.5, "peak_mem_mb": 300.0,
                                      "latencies_ms": [2.5]}}


def test_a_turns_writes_commit_together(db_url):
    store, (first, second) = _store_with_jobs(db_url)
    commits = []
    event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    with store.turn():
        store.job_started(first.id, "d")
        store.device_state("d", "local", "busy", job_id=first.id)
        store.job_finished(first.id, _done())
        store.device_state("d", "local", "idle")
        store.job_started(second.id, "d")
    assert len(commits) == 1
    rows = {r["job_key"]: r for r in store.sweep_results("s")}
    assert rows[first.key]["status"] == "done" and rows[first.key]["p50_ms"] == 2.5
    assert rows[second.key]["status"] == "running"


def test_a_failing_write_undoes_the_whole_turn(db_url):
    store, (first, second) = _store_with_jobs(db_url)
    store.job_started(first.id, "d")  # a turn of its own, before
    with pytest.raises(StoreError):
        with store.turn():
            store.job_finished(first.id, _done())
            store.device_state("d", "local", "idle")
            store.job_started(10_000, "d")  # no such job: its attempt breaks a foreign key
    rows = {r["job_key"]: r for r in store.sweep_results("s")}
    assert rows[first.key]["status"] == "running" and rows[first.key]["p50_ms"] is None
    assert rows[second.key]["status"] == "queued"
    assert store.status_counts(store.sweep_id("s")) == {"running": 1, "queued": 1}
    store.job_finished(first.id, _done())  # the next turn writes as usual
    assert store.status_counts(store.sweep_id("s")) == {"done": 1, "queued": 1}
