"""Scheduling a sweep's jobs over devices with Ray.

Each device's worker (farm.cluster: its runner, in the Ray actor of the devices placed alike)
runs its jobs one at a time. The controller (this process) hands each idle device its next job,
preferring the (model, variant) it already has loaded, and is the only writer of the database:
outcomes are stored as they arrive. A device whose worker dies is out of the run, its job
retried elsewhere; where its Ray node is gone, every device of that node goes `offline`.
"""
from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from typing import Protocol

import ray
from ray.exceptions import RayError, RayTaskError

from agents.catalog import CATALOG
from agents.methods import Variant
from farm.cluster import ask_events, node_gone, sharing, why_lost
from farm.devices import group_key
from farm.dispatch import PendingJobs, repeat_of
from farm.errors import FarmError
from farm.glue.data import Examples
from farm.glue.scoring import score
from farm.policy import RetryPolicy
from farm.results import Failure, Status
from farm.store import QueuedJob, Store

POLL_S = 0.5
HEARTBEAT_S = 5.0  # how often a busy device's "last seen" is written while it answers
CANCEL_POLL_S = 1.0  # how often the database is asked whether `farm cancel` was run


class Observer(Protocol):
    """What a person watching a sweep is told (the CLI draws it with Rich)."""
    def sweep_started(self, name: str, to_run: int, total: int) -> None: ...
    def devices_ready(self, facts: dict[str, dict]) -> None: ...
    def device_refused(self, name: str, error: FarmError) -> None: ...
    def warning(self, message: str, fix: str) -> None: ...  # before anything runs
    def job_started(self, job: QueuedJob, device: str) -> None: ...
    def job_phase(self, job: QueuedJob, device: str, phase: str) -> None: ...
    def job_finished(self, job: QueuedJob, outcome: dict) -> None: ...
    def job_retried(self, job: QueuedJob, outcome: dict, attempt: int) -> None: ...
    def device_quarantined(self, name: str, reason: str) -> None: ...
    def cancelling(self, why: str, running: int) -> None: ...
    def took_over(self, dead) -> None: ...  # a dead run's devices and jobs (farm.store.runs)


class Cancelled(Exception):
    """`farm cancel` asked this run to stop."""


def group_of(job: QueuedJob) -> str:
    return group_key(job.spec)


def work_estimate(job: QueuedJob) -> float:
    """A rough relative cost, used only to order the queue (never stored or shown): weight
    matmul work per token for catalog shapes, times the tokens in a batch."""
    config = CATALOG.get(job.spec["model"]["name"], {}).get("config", {})
    layers = config.get("num_hidden_layers", config.get("n_layers", 12))
    hidden = config.get("hidden_size", config.get("dim", 768))
    ffn = config.get("intermediate_size", config.get("hidden_dim", 4 * hidden))
    per_token = layers * (4 * hidden * hidden + 2 * hidden * ffn)
    return per_token * job.spec["batch_size"] * job.spec["seq_len"] * Variant.from_job(
        job.spec).cost()


def longest_first(jobs: list[QueuedJob]) -> list[QueuedJob]:
    """Heavy groups first, and within a group the heaviest jobs first, so that the sweep ends on
    small jobs that any idle device can pick up, not on one long job while the others wait."""
    totals: dict[str, float] = {}
    for job in jobs:
        totals[group_of(job)] = totals.get(group_of(job), 0.0) + work_estimate(job)
    return sorted(jobs, key=lambda j: (-totals[group_of(j)], group_of(j), -work_estimate(j)))


def interleaved(jobs: list[QueuedJob], seed: str) -> list[QueuedJob]:
    """Repeats in rounds: round r holds every job's repeat r, rounds in order, and within a
    round the groups in a shuffled order drawn afresh each round from `seed` (the sweep's name:
    the same sweep, the same order). A drift over the sweep (heat, a neighbour's load) then
    falls on every variant alike instead of on whichever ran last."""
    rng = random.Random(seed)
    ordered = []
    for r in sorted({repeat_of(j) for j in jobs}):
        round_jobs = [j for j in jobs if repeat_of(j) == r]
        groups = sorted({group_of(j) for j in round_jobs})
        rng.shuffle(groups)
        rank = {group: i for i, group in enumerate(groups)}
        ordered += sorted(round_jobs, key=lambda j: (rank[group_of(j)], -work_estimate(j)))
    return ordered


class Scheduler:
    def __init__(self, store: Store, workers: dict[str, object], pools: dict[str, list[str]],
                 observer: Observer, kinds: dict[str, str],
                 data: dict[str, Examples] | None = None, retries: int = 2,
                 sweep: tuple[int, str] | None = None):
        self.store, self.workers, self.pools, self.observer = store, workers, pools, observer
        self.kinds = kinds  # device -> kind, for the devices table
        self.data = data or {}  # GLUE task -> its examples (the agent gets the texts)
        self.texts: dict[str, object] = {}  # GLUE task -> its texts, put in Ray's object store
        self.policy = RetryPolicy(retries)  # retries and quarantine
        self.sweep = sweep  # (id, name): whose cancel requests to heed
        self.loaded: dict[str, str] = {}  # device -> group it has loaded
        self.live: set[str] = set(workers)  # devices still usable
        self.running: dict[object, tuple[QueuedJob, str]] = {}  # ObjectRef -> (job, device)
        self.asked: dict[object, list[str]] = {}  # ObjectRef of an events() call -> devices
        self.pending = PendingJobs()
        self.stranded: list[QueuedJob] = []
        self.heartbeats: dict[str, float] = {}  # device -> when its last heartbeat was written
        self.nodes: dict[str, str] = {}  # device -> the id of the Ray node its worker runs on
        self.cancelled = False
        self.turns_s = 0.0  # time in turns: the controller's own work, not its waits
        self._cancel_checked = self._events_asked = 0.0

    def run(self, jobs: list[QueuedJob]) -> None:
        """Each turn: wait for outcomes (one call for all running devices), then store them,
        the phases the devices report and the next jobs handed out, all in one transaction
        (a job's outcome and its figures are never split; a failed write undoes the turn)."""
        repeated = any(repeat_of(j) > 1 for j in jobs)
        self.pending = PendingJobs(interleaved(jobs, self.sweep[1] if self.sweep else "")
                                   if repeated else longest_first(jobs))
        self.nodes = self._nodes()
        with _CtrlC() as ctrl_c:
            try:
                with self._turn():
                    self._dispatch_idle()
                while self.running:
                    ctrl_c.check()
                    ready = self._ready()
                    with self._turn():
                        self._forward_events()
                        for ref in ready:
                            self.live -= self._collect(ref)
                        self._dispatch_idle()
                    ctrl_c.check()
                    self._check_cancel()
                self.stranded = self.pending.jobs()  # no usable device left: they stay queued
            except Cancelled:
                self.observer.cancelling("farm cancel was run", len(self.running))
                self._cancel_all("cancelled by `farm cancel`")
                self.cancelled = True
            except BaseException:
                if self.running or len(self.pending):
                    self.observer.cancelling("interrupted", len(self.running))
                self._cancel_all("cancelled: farm submit was interrupted")
                raise

    @contextlib.contextmanager
    def _turn(self):
        """One transaction for the turn's writes; the observer is told of them once they are
        committed (a result shown is stored, and an observer that writes itself, as `farm
        cancel` does, never waits on the turn's lock). A turn undone is told nothing."""
        started = time.perf_counter()
        observer, self.observer = self.observer, _Deferred(self.observer)
        try:
            with self.store.turn():
                yield
        finally:
            told, self.observer = self.observer, observer
        told.flush()
        self.turns_s += time.perf_counter() - started

    def _dispatch_idle(self) -> None:
        busy = {device for _, device in self.running.values()}
        for device in sorted(self.live - busy):
            job = self._choose(device, self.pending)
            if job is not None:
                self.pending.take(job)
                self._dispatch(job, device)

    def _ready(self) -> list:
        """The jobs that have ended: wait for one (up to POLL_S), then take every other one
        that has ended meanwhile."""
        refs = list(self.running)
        ready, _ = ray.wait(refs, num_returns=1, timeout=POLL_S)
        if ready and len(refs) > 1:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        return ready

    def _nodes(self) -> dict[str, str]:
        """Each device's Ray node, asked now: a worker that has died cannot tell."""
        refs = {device: worker.node.remote() for device, worker in self.workers.items()}
        nodes = {}
        for device, ref in refs.items():
            try:
                nodes[device] = ray.get(ref, timeout=30)
            except RayError:
                pass
        return nodes

    def _check_cancel(self) -> None:
        if self.sweep is None or time.monotonic() - self._cancel_checked < CANCEL_POLL_S:
            return
        self._cancel_checked = time.monotonic()
        if self.store.cancel_requested(self.sweep[1]):
            raise Cancelled()

    def _pick(self, device: str, pending: list[QueuedJob]) -> QueuedJob | None:
        """A job of the earliest round of repeats that has one for this device (a later round
        only where the earlier ones have nothing it should take: the rounds stay interleaved).
        Within a round: the device's loaded group first (no reload); else a group no device
        holds; else, so that no device idles while another has a queue, a group that still
        has several jobs waiting elsewhere (paying one more load)."""
        return self._choose(device, PendingJobs(pending))

    def _choose(self, device: str, pending: PendingJobs) -> QueuedJob | None:
        def held_elsewhere(target: str, group: str) -> bool:  # by a live device that may run it
            return any(self.loaded.get(d) == group for d in self.pools[target]
                       if d != device and d in self.live)

        return pending.pick(device, self.pools, self.loaded.get(device), held_elsewhere,
                            self._avoid)

    def _avoid(self, job: QueuedJob, device: str) -> bool:
        """A retry goes to another device of its pool while one is usable."""
        return self.policy.avoid(job.id, device,
                                 [d for d in self.pools[job.target] if d in self.live])

    def _dispatch(self, job: QueuedJob, device: str) -> None:
        self.store.job_started(job.id, device)
        self.store.device_state(device, self.kinds[device], "busy", job_id=job.id)
        self.observer.job_started(job, device)
        spec = dict(job.spec, key=job.key)
        self.running[self.workers[device].run_job.remote(spec, self._texts(job))] = (job, device)
        self.loaded[device] = group_of(job)

    def _texts(self, job: QueuedJob):
        task = job.spec["task"]
        if task not in self.data:
            return None
        if task not in self.texts:
            self.texts[task] = ray.put([list(t) for t in self.data[task].texts])
        return self.texts[task]

    def _forward_events(self) -> None:
        """The running jobs' phases, without waiting on any device: every POLL_S the busy
        devices with no question outstanding are asked for what they have, one call for each
        worker process that holds some (farm.cluster.ask_events), and what has come back by now
        is taken, all in one ray.wait that never blocks (a slow or dead worker holds up
        nothing; its answer is taken on a later turn, or dropped with its job)."""
        if not self.running:
            return
        if time.monotonic() - self._events_asked >= POLL_S:
            self._events_asked = time.monotonic()
            asked = {device for devices in self.asked.values() for device in devices}
            busy = sorted({device for _, device in self.running.values()} - asked)
            self.asked.update(ask_events(self.workers, busy))
        answered, _ = ray.wait(list(self.asked), num_returns=len(self.asked), timeout=0)
        current = {device: job for job, device in self.running.values()}
        for ref in answered:
            devices = self.asked.pop(ref)
            try:
                reported = ray.get(ref)
            except RayError:
                continue
            for device in devices:
                self._forward(device, current.get(device), reported[device])

    def _forward(self, device: str, job: QueuedJob | None, events: list[dict]) -> None:
        """A device's heartbeat (every HEARTBEAT_S at most) and its job's latest phase. `job`:
        the one it runs now; an answer may cross the end of the job it was asked in."""
        if time.monotonic() - self.heartbeats.get(device, 0.0) > HEARTBEAT_S:
            self.heartbeats[device] = time.monotonic()
            self.store.device_seen(device)
        phases = [e["phase"] for e in events
                  if e.get("event") == "phase" and job is not None and e.get("job") == job.key]
        if phases:
            self.store.job_phase(job.id, phases[-1])
            self.observer.job_phase(job, device, phases[-1])

    def _collect(self, ref) -> set[str]:
        """Store one finished job; return the devices that can no longer be used."""
        job, device = self.running.pop(ref)
        lost: dict[str, tuple[str, str | None]] = {}  # device -> (its state, why)
        try:
            outcome = ray.get(ref)
        except RayError as error:  # its worker died or was stopped, or the call failed there
            outcome, lost = self._worker_failed(device, error)
        score(job.spec, self.data.get(job.spec["task"]), outcome)
        infra = outcome.get("failure") == Failure.INFRA
        verdict = self.policy.attempt_ended(job.id, device, infra, outcome.get("error"),
                                            self.store.infra_attempts(job.id) if infra else 0)
        if infra:
            outcome["error"] = verdict.error
        self.store.job_finished(job.id, outcome, retry=verdict.retry)
        for name, (state, why) in lost.items():
            self.loaded.pop(name, None)
            self.store.device_state(name, self.kinds[name], state,
                                    error=why or outcome["error"], seen=False)
        if infra and device not in lost:
            self.store.device_state(device, self.kinds[device], "idle", error=outcome["error"],
                                    seen=False)
        elif device not in lost:
            self.store.device_state(device, self.kinds[device], "idle")
        if verdict.quarantine and device not in lost:
            self.store.quarantine(device, verdict.quarantine)
            self.observer.device_quarantined(device, verdict.quarantine)
            lost[device] = ("quarantined", verdict.quarantine)
        if verdict.retry:
            self.pending.put_back(job)
            self.observer.job_retried(job, outcome, verdict.attempt)
        else:
            self.observer.job_finished(job, outcome)
        return set(lost)

    def _worker_failed(self, device: str, error: Exception
                       ) -> tuple[dict, dict[str, tuple[str, str | None]]]:
        """The outcome of a job whose device's worker died, and the devices lost with it:
        where its Ray node is gone, every device of that node (`offline`, with why; None: the
        job's error says it); else every live device of its worker process (`error`), which
        share it: one left live would be handed the next job only to fail it, an
        infrastructure failure counted against a job that never ran."""
        node = self.nodes.get(device)
        # Anything but the call's own exception (RayTaskError) says the worker process is gone:
        # it died, its node did, or Ray stopped it (its memory monitor: OutOfMemoryError).
        died = not isinstance(error, RayTaskError)
        gone = node_gone(node) if node and died else None
        why = why_lost(error)
        now = time.time()
        outcome = {"status": Status.FAILED, "failure": Failure.INFRA, "device": device,
                   "started_at": now, "finished_at": now, "result": {},
                   "error": f"device {device!r} went offline: {gone}" if gone else
                   f"device worker for {device!r} failed: {why}"}
        if gone:
            return outcome, {name: ("offline", None if name == device else
                                    f"device {name!r} went offline: {gone}")
                             for name, at in self.nodes.items() if at == node}
        if not died:  # the call failed, the process lives on
            return outcome, {device: ("error", None)}
        return outcome, {name: ("error", None if name == device else
                                f"device {name!r} lost its Ray worker, which it shared with "
                                f"{device!r}: {why}")
                         for name in sharing(self.workers, device)
                         if name == device or name in self.live}

    def _cancel_all(self, reason: str) -> None:
        """Stop what runs and what waits: both end `cancelled`; done results stay as they are."""
        for job, device in list(self.running.values()):
            try:
                self.workers[device].cancel.remote()
            except RayError:
                pass
            now = time.time()
            self.store.job_finished(job.id, {
                "status": Status.CANCELLED, "device": device, "started_at": now,
                "finished_at": now, "error": reason, "result": {}})
            self.store.device_state(device, self.kinds[device], "idle", seen=False)
        self.running.clear()
        if self.sweep is not None:
            self.store.cancel_queued(self.sweep[0], reason)
        self.pending = PendingJobs()


class _Deferred:
    """An observer's calls, kept to be made later (flush)."""

    def __init__(self, observer: Observer):
        self.observer, self.calls = observer, []

    def __getattr__(self, name: str):
        return lambda *args: self.calls.append((getattr(self.observer, name), args))

    def flush(self) -> None:
        for call, args in self.calls:
            call(*args)


class _CtrlC:
    """Ctrl-C during a sweep is noted, and acted on between the scheduler's steps (check()).
    Raised where it lands, a KeyboardInterrupt could be lost (Ray's calls check for signals
    inside and may clear it: a sweep then ran on for its next job's whole window) or could fall
    between a job's outcome and its device's state (the device stayed `busy`). A second Ctrl-C
    while the sweep is being cancelled is noted too, and changes nothing."""

    def __init__(self):
        self.pressed, self.installed, self.previous = False, False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # only it gets SIGINT
            self.previous = signal.signal(signal.SIGINT, self._note)
            self.installed = True
        return self

    def _note(self, *_):
        self.pressed = True

    def check(self) -> None:
        if self.pressed:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.installed:  # a handler set outside Python reads as None: Python's default then
            signal.signal(signal.SIGINT, self.previous if self.previous is not None
                          else signal.default_int_handler)
