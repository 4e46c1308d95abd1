"""The queue of a run's jobs waiting for a device, indexed so that handing a device its next job
costs as much for 5,000 waiting jobs as for 10.

Jobs keep the order the scheduler gave them (farm.controller: longest first, or repeats
interleaved); a retried job goes back to the front. They sit in buckets by round of repeats,
then by (target, group): every job of a bucket may run on the same devices and needs the same
load, so what the scheduler asks of a job (may this device run it, does it hold the model,
does another device) it asks once per bucket, and a bucket's first job stands for it.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from farm.devices import group_key
from farm.store import QueuedJob


def repeat_of(job: QueuedJob) -> int:
    """Which of the sweep's `repeats` a job is (1 without repeats)."""
    return job.spec.get("repeat", 1)


class PendingJobs:
    def __init__(self, jobs: list[QueuedJob] = ()):
        self.rounds: dict[int, dict[tuple[str, str], deque]] = {}
        self.where: dict[int, tuple[int, tuple[str, str], int]] = {}  # job id -> round, key, seq
        self.front = 0
        for job in jobs:
            self._add(job, len(self.where), deque.append)

    def _add(self, job: QueuedJob, seq: int, put) -> None:
        round_, key = repeat_of(job), (job.target, group_key(job.spec))
        put(self.rounds.setdefault(round_, {}).setdefault(key, deque()), (seq, job))
        self.where[job.id] = (round_, key, seq)

    def put_back(self, job: QueuedJob) -> None:
        """A retried job: first in its queue again."""
        self.front -= 1
        self._add(job, self.front, deque.appendleft)

    def take(self, job: QueuedJob) -> None:
        round_, key, seq = self.where.pop(job.id)
        buckets = self.rounds[round_]
        buckets[key].remove((seq, job))
        if not buckets[key]:
            del buckets[key]
            if not buckets:
                del self.rounds[round_]

    def __len__(self) -> int:
        return len(self.where)

    def jobs(self) -> list[QueuedJob]:
        """What waits, in the order it would run."""
        queued = [item for buckets in self.rounds.values() for bucket in buckets.values()
                  for item in bucket]
        return [job for _, job in sorted(queued, key=lambda item: item[0])]

    def pick(self, device: str, pools: dict[str, list[str]], mine: str | None,
             held_elsewhere: Callable[[str, str], bool],
             avoid: Callable[[QueuedJob, str], bool]) -> QueuedJob | None:
        """A job of the earliest round of repeats that has one for this device (a later round
        only where the earlier ones have nothing it should take: the rounds stay interleaved).
        Within a round: the device's loaded group (`mine`) first (no reload); else a group no
        other device holds; else, so that no device idles while another has a queue, a group
        that still has several jobs waiting (paying one more load)."""
        for round_ in sorted(self.rounds):
            heads, waiting = [], {}
            for (target, group), bucket in self.rounds[round_].items():
                if device not in pools[target]:
                    continue
                mayrun = _first_two(bucket, lambda j: not avoid(j, device))
                if mayrun:
                    heads.append((mayrun[0][0], mayrun[0][1], target, group))
                    waiting[group] = waiting.get(group, 0) + len(mayrun)
            for prefer in (lambda t, g: g == mine, lambda t, g: not held_elsewhere(t, g),
                           lambda t, g: waiting[g] >= 2):
                chosen = [(seq, job) for seq, job, t, g in heads if prefer(t, g)]
                if chosen:
                    return min(chosen, key=lambda item: item[0])[1]
        return None


def _first_two(bucket: deque, ok: Callable[[QueuedJob], bool]) -> list:
    """A bucket's first two jobs that pass `ok` (two: enough to say "several wait")."""
    found = []
    for seq, job in bucket:
        if ok(job):
            found.append((seq, job))
            if len(found) == 2:
                break
    return found
