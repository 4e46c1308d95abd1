"""farm's API: what the CLI calls, and what a notebook can call too."""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from farm.controller import (DEVICE_RESOURCE, Observer, Scheduler, close_workers,
                             prepare_workers, start_workers)
from farm.errors import DeviceError
from farm.inventory import Inventory, load_inventory
from farm.store import Store
from farm.sweep import Sweep, expand, load_sweep, resolve_targets

DEFAULT_INVENTORY = "inventory.yaml"


@dataclass
class SubmitReport:
    sweep: str
    total_jobs: int
    ran: int
    counts: dict[str, int]
    results: list[dict]

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0) + self.counts.get("timeout", 0)


class _Quiet:
    def sweep_started(self, name, to_run, total): pass
    def devices_ready(self, facts): pass
    def job_started(self, job, device): pass
    def job_phase(self, job, device, phase): pass
    def job_finished(self, job, outcome): pass


@contextlib.contextmanager
def ray_connection(address: str | None, inventory: Inventory):
    """Join a Ray cluster at `address`, or start a private local instance for this run."""
    import ray

    if ray.is_initialized():
        yield
        return
    try:
        if address:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        else:
            # address="local": a private instance, never a cluster `ray start` left running.
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                     object_store_memory=128 * 2**20, logging_level=logging.ERROR,
                     log_to_driver=False,
                     resources={DEVICE_RESOURCE.format(d.name): 1 for d in inventory.devices})
    except (ConnectionError, RuntimeError, ValueError) as error:
        hint = "check --ray-address (HOST:PORT of `ray start --head`)"
        if "auth" in repr(error.__cause__ or error).lower() or "token" in str(error).lower():
            hint = ("the cluster uses token authentication: run farm with RAY_AUTH_MODE=token "
                    "and the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN)")
        raise DeviceError(f"cannot start or join Ray{' at ' + address if address else ''}: "
                          f"{str(error).splitlines()[0]}", hint) from None
    try:
        yield
    finally:
        ray.shutdown()


def submit(sweep_file: str | Path, inventory_file: str | Path = DEFAULT_INVENTORY,
           db: str | None = None, ray_address: str | None = None,
           observer: Observer | None = None) -> SubmitReport:
    """Validate, record and run a sweep; jobs already finished in the database are not rerun."""
    observer = observer or _Quiet()
    inventory = load_inventory(inventory_file)
    sweep: Sweep = load_sweep(sweep_file)
    pools = resolve_targets(sweep, inventory, str(sweep_file), str(inventory_file))
    jobs = expand(sweep, list(pools))
    store = Store(db)
    try:
        keys = {job.key for job in jobs}
        needed = _devices_needed(store, sweep, jobs, pools)
        ran = 0
        if needed:
            devices = [d for d in inventory.devices if d.name in needed]
            with ray_connection(ray_address, inventory):
                workers = start_workers(devices)
                try:
                    observer.devices_ready(prepare_workers(workers))
                    submitted = store.add_sweep(sweep, str(sweep_file), inventory, jobs)
                    runnable = store.runnable_jobs(submitted.id, keys)
                    ran = len(runnable)
                    observer.sweep_started(sweep.name, ran, len(jobs))
                    Scheduler(store, workers, pools, observer).run(runnable)
                finally:
                    close_workers(workers)
        else:
            submitted = store.add_sweep(sweep, str(sweep_file), inventory, jobs)
        return SubmitReport(sweep.name, len(jobs), ran, store.status_counts(submitted.id),
                            store.sweep_results(sweep.name))
    finally:
        store.close()


def _devices_needed(store: Store, sweep: Sweep, jobs, pools) -> set[str]:
    """The devices of the pools that still have unfinished jobs (none when all are done)."""
    finished = store.finished_keys(sweep.name)
    targets = {job.target for job in jobs if job.key not in finished}
    return {device for target in targets for device in pools[target]}
