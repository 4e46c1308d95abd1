"""Retries and quarantine: what the scheduler does when a job's attempt ends.

An attempt that failed for the infrastructure (the device or the way to it) is retried, up to
the sweep's `retries`, on another device of its pool while one is usable; a job's own failure
(oom, timeout, a model error) is final. A device whose attempts fail for the infrastructure
QUARANTINE_AFTER times in a row leaves the run. Plain bookkeeping: the scheduler tells it what
happened and asks; nothing here touches Ray, the database or a process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

QUARANTINE_AFTER = 2  # infrastructure failures in a row that take a device out of the run


@dataclass(frozen=True)
class Verdict:
    retry: bool  # the job runs again (first in the queue)
    attempt: int  # the job's infrastructure failures so far, this one included (0: not one)
    error: str | None  # the attempt's error; on a final infrastructure failure, with the count
    quarantine: str | None  # why the device should leave the run, or None


class RetryPolicy:
    def __init__(self, retries: int = 2, quarantine_after: int = QUARANTINE_AFTER):
        self.retries = retries  # infrastructure failures a job may have before it ends failed
        self.quarantine_after = quarantine_after
        self.failed_on: dict[int, set[str]] = {}  # job -> devices its retried attempts failed on
        self.streak: dict[str, int] = {}  # device -> infrastructure failures in a row

    def attempt_ended(self, job: int, device: str, infra: bool, error: str | None,
                      earlier_infra: int = 0) -> Verdict:
        """Job `job`'s attempt on `device` ended; `infra`: it failed for the infrastructure,
        as `earlier_infra` earlier attempts of the job did (the store counts them, across runs)."""
        self.streak[device] = self.streak.get(device, 0) + 1 if infra else 0
        if not infra:
            return Verdict(False, 0, error, None)
        attempt = earlier_infra + 1
        retry = attempt <= self.retries
        if retry:
            self.failed_on.setdefault(job, set()).add(device)
        elif self.retries:
            error = f"{error} (attempt {attempt}; retries: {self.retries})"
        quarantine = None
        if self.streak[device] >= self.quarantine_after:
            quarantine = (f"quarantined after {self.streak[device]} infrastructure failures in "
                          f"a row; last: {error}")
        return Verdict(retry, attempt, error, quarantine)

    def avoid(self, job: int, device: str, usable: Iterable[str]) -> bool:
        """Whether the job's next attempt should stay off `device`: it failed there, and
        another of the `usable` devices of its pool has not failed it."""
        failed = self.failed_on.get(job, set())
        return device in failed and any(d not in failed for d in usable)
