"""The scheduler's choices, on queued jobs as the store hands them out (no Ray needed to choose)."""
from farm.controller import Scheduler, group_of, longest_first
from farm.store import QueuedJob


def _job(i, model, variant, batch, target="pool"):
    spec = {"model": {"name": model, "path": None}, "variant": variant, "task": "synthetic",
            "batch_size": batch, "seq_len": 128}
    return QueuedJob(i, f"k{i}", target, spec)


def _scheduler(pools, devices):
    return Scheduler(store=None, workers={d: None for d in devices}, pools=pools, observer=None,
                     kinds={d: "cgroup" for d in devices})


def test_heavy_groups_and_big_batches_go_first():
    jobs = [_job(1, "bert-tiny", "fp32", 1), _job(2, "bert-base", "fp32", 1),
            _job(3, "bert-base", "fp32", 32), _job(4, "bert-tiny", "fp32", 32)]
    assert [j.id for j in longest_first(jobs)] == [3, 2, 4, 1]


def test_a_device_keeps_its_model_then_takes_a_free_group_then_helps():
    s = _scheduler({"pool": ["a", "b"]}, ["a", "b"])
    base = [_job(i, "bert-base", "fp32", b) for i, b in enumerate((32, 16, 8), start=1)]
    tiny = [_job(9, "bert-tiny", "fp32", 1)]
    s.loaded = {"a": group_of(base[0])}
    assert s._pick("a", base + tiny).id == 1           # its loaded group, no reload
    assert s._pick("b", base + tiny).id == 9           # a group nobody holds
    assert s._pick("b", base).id == 1                  # helps: several jobs wait on a's group
    assert s._pick("b", base[2:]) is None              # one job left: a will get to it


def test_a_job_only_one_device_may_run_is_never_left_behind():
    s = _scheduler({"only-a": ["a"], "pool": ["a", "b"]}, ["a", "b"])
    job = _job(1, "bert-base", "fp32", 1, target="only-a")
    s.loaded = {"b": group_of(job)}                    # b holds the model but may not run it
    assert s._pick("a", [job]).id == 1
    s.live = {"a"}
    s.loaded = {"b": group_of(job), "a": "other"}
    assert s._pick("a", [job]).id == 1
