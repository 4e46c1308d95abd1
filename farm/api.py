"""farm's API: what the CLI calls, and what a notebook can call too."""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from farm.devices.kinds import kind_of
from farm.devices.lock import Owner, held_here, lock_path, refusal
from farm.errors import (Busy, ConfigError, DeviceError, DeviceUnreachable, FarmError,
                         HostKeyRefused, QueryError)
from farm.inventory import Inventory, load_inventory
from farm.readers import (COMPARE_BY, DEFAULT_INVENTORY, RECENT_HOURS,  # noqa: F401
                          compare, device_table, report_rows, sql, status_snapshot, sweep_rows,
                          table_rows, variants_against_fp32)
from farm.readers import require_sweeps as _require_sweeps
from farm.results import Status
from farm.store import Store, queries, resolve_url, url_shown
from farm.store.readonly import ReadOnly
from farm.store.clock import HEARTBEAT_S
from farm.sweep import Sweep, expand, load_sweep, read_data, resolve_targets

if TYPE_CHECKING:  # Ray and the controller are imported once the sweep is found good
    from farm.controller import Observer


@dataclass
class SubmitReport:
    sweep: str
    total_jobs: int
    ran: int
    counts: dict[str, int]
    results: list[dict]
    refused: dict[str, str] = field(default_factory=dict)  # device -> why it was not used
    cancelled: bool = False  # `farm cancel` stopped it
    # Results of other sweeps that may stand in for the results' baselines, by (sweep, job key)
    # (farm.store.queries.baselines_elsewhere)
    baselines: dict[tuple, list[dict]] = field(default_factory=dict)
    # The controller's own seconds in this run: its turns (storing outcomes, choosing and
    # dispatching jobs), not its waits for the devices (bench/scale.py controller)
    controller_s: float = 0.0

    @property
    def failed(self) -> int:
        return self.counts.get(Status.FAILED, 0) + self.counts.get(Status.TIMEOUT, 0)

    @property
    def not_run(self) -> int:
        return self.counts.get(Status.QUEUED, 0) + self.counts.get(Status.RUNNING, 0)


class _Quiet:
    """An Observer (farm.controller) told everything that shows nothing."""

    def __getattr__(self, name: str):
        return _nothing


def _nothing(*args, **kwargs) -> None:
    pass


@contextlib.contextmanager
def ray_connection(address: str | None, inventory: Inventory):
    """Join a Ray cluster at `address`, or start a private local instance for this run."""
    import ray

    from farm.cluster import DEVICE_RESOURCE, TOKEN_HINT, start_local_instance, use_token

    if ray.is_initialized():
        yield
        return
    try:
        if address:
            use_token()  # this user's token, as Ray uses it for a cluster it finds
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        else:
            # address="local": a private instance, never a cluster `ray start` left running.
            # Without Ray's memory monitor, unless RAY_memory_monitor_refresh_ms asks for it: on a
            # host whose memory passed its threshold (95%) it stops a Ray worker, and farm's
            # worker holds the devices, not the memory. The agents hold it, each within its
            # device's limit, and an agent that outgrows it ends that job `oom` alone.
            monitor = ({} if "RAY_memory_monitor_refresh_ms" in os.environ
                       else {"_system_config": {"memory_monitor_refresh_ms": 0}})
            start_local_instance(
                num_cpus=os.cpu_count(), include_dashboard=False,
                object_store_memory=128 * 2**20, logging_level=logging.ERROR,
                log_to_driver=False,
                resources={DEVICE_RESOURCE.format(d.name): 1 for d in inventory.devices},
                **monitor)
    except (ConnectionError, RuntimeError, ValueError) as error:
        hint = "check --ray-address (HOST:PORT of `ray start --head`)"
        if "auth" in repr(error.__cause__ or error).lower() or "token" in str(error).lower():
            hint = TOKEN_HINT
        raise DeviceError(f"cannot start or join Ray{' at ' + address if address else ''}: "
                          f"{str(error).splitlines()[0]}", hint) from None
    try:
        yield
    finally:
        ray.shutdown()


def submit(sweep_file: str | Path, inventory_file: str | Path = DEFAULT_INVENTORY,
           db: str | None = None, ray_address: str | None = None,
           observer: Observer | None = None) -> SubmitReport:
    """Validate, record and run a sweep; jobs already finished in the database are not rerun.
    A sweep's name is its file's (farm.store.sweeps): another file under it is a ConfigError."""
    inventory = load_inventory(inventory_file)
    sweep: Sweep = load_sweep(sweep_file)
    return _run(sweep, inventory, str(sweep_file), str(inventory_file), db, ray_address,
                observer or _Quiet(), source=str(Path(sweep_file).resolve()))


def resume(name: str, db: str | None = None, ray_address: str | None = None,
           observer: Observer | None = None) -> SubmitReport:
    """Finish a sweep as it was last submitted (its stored sweep and inventory), whatever its
    file says now: the jobs not yet finished run; nothing finished runs again."""
    from pydantic import ValidationError

    source, spec_json, inventory_json = _stored_sweep(name, db)
    try:
        sweep = Sweep.model_validate_json(spec_json, context={"base_dir": "/"})
        inventory = Inventory.model_validate_json(inventory_json)
    except ValidationError as error:
        first = error.errors()[0]
        raise ConfigError(source, ".".join(map(str, first["loc"])) or "(top level)",
                          f"the stored sweep no longer holds: {first['msg']}",
                          "fix what moved (a checkpoint, the data), or submit the file again") \
            from None
    return _run(sweep, inventory, source, f"(the inventory stored with {name})", db,
                ray_address, observer or _Quiet(), source=source)


def _stored_sweep(name: str, db: str | None) -> tuple[str, str, str]:
    """A sweep as last submitted: its file, spec and inventory (read-only: asking about a
    sweep never creates a database)."""
    with contextlib.closing(ReadOnly(db)) as reader:
        stored = queries.stored_sweep(reader, name)
    if stored is None:
        raise QueryError(f"no sweep named {name!r} in {url_shown(resolve_url(db))}",
                         "`farm status` lists the sweeps; check --db / FARM_DB")
    return stored["source"], stored["spec_json"], stored["inventory_json"]


def _run(sweep: Sweep, inventory: Inventory, sweep_file: str, inventory_file: str,
         db: str | None, ray_address: str | None, observer: Observer,
         source: str) -> SubmitReport:
    """Expand, claim the devices, prepare them and run what is left; every bad input is found
    before the database is written. The report is of this file's jobs (`source`'s: the sweep
    may hold others, of the file's earlier versions)."""
    pools = resolve_targets(sweep, inventory, sweep_file, inventory_file)
    data = read_data(sweep)
    jobs = expand(sweep, list(pools), data)
    store = Store(db)
    try:
        store.check_sweep_file(sweep.name, source, shown=sweep_file)
        needed = _devices_needed(store, sweep, jobs, pools)
        ran, refused, cancelled, controller_s = 0, {}, False, 0.0
        if needed:
            kinds = {d.name: d.kind for d in inventory.devices if d.name in needed}
            for dead in store.begin_run(sweep.name, kinds):  # Busy: another live run has them
                observer.took_over(dead)
            outcome = "interrupted"
            try:
                with _heartbeat(store):
                    ran, refused, cancelled, controller_s = _drive(
                        store, sweep, inventory, pools, jobs, data, kinds, (sweep_file, source),
                        ray_address, observer)
                outcome = "cancelled" if cancelled else "finished"
            except Busy:  # another farm, with another database, holds a device
                outcome = "refused"
                raise
            finally:
                store.end_run(outcome)
        else:
            store.add_sweep(sweep, source, inventory, jobs)
        keys = {job.key for job in jobs}
        results = [r for r in store.sweep_results(sweep.name) if r["job_key"] in keys]
        with contextlib.closing(ReadOnly(store.url)) as reader:
            baselines = queries.baselines_elsewhere(reader, results)
        return SubmitReport(sweep.name, len(jobs), ran,
                            store.status_counts(store.sweep_id(sweep.name), keys), results,
                            {name: str(error) for name, error in refused.items()}, cancelled,
                            baselines, controller_s)
    finally:
        store.close()


def _drive(store: Store, sweep: Sweep, inventory: Inventory, pools, jobs, data, kinds,
           files: tuple[str, str], ray_address, observer) -> tuple[int, dict, bool, float]:
    """Prepare the devices and schedule the jobs: (jobs run to an end now, refused devices,
    cancelled, the controller's seconds in its turns). `files`: the sweep file as given, and
    as stored (its resolved path)."""
    from farm.cluster import close_workers, prepare_workers, start_workers
    from farm.controller import Scheduler

    sweep_file, source = files
    refused = _quarantine_checks(store, inventory, kinds)
    devices = _placed([d for d in inventory.devices if d.name in kinds and d.name not in refused],
                      observer)
    for name, error in refused.items():
        observer.device_refused(name, error)
    _refuse_held_devices(devices)
    with ray_connection(ray_address, inventory):
        workers = start_workers(devices)
        try:
            ready, failed = prepare_workers(workers, Owner.of(sweep.name, store.url))
            failed.update(_clock_refusals(sweep, inventory, ready, sweep_file))
            for name, error in failed.items():
                ready.pop(name, None)
                store.device_state(name, kinds[name], _refused_state(error), error=str(error),
                                   seen=False)
                observer.device_refused(name, error)
            refused.update(failed)
            if not ready:  # nothing can run: say why, and write no sweep
                raise _nothing_usable(refused)
            for name, facts in ready.items():
                store.device_state(name, kinds[name], "idle", facts=facts, error=None)
            observer.devices_ready(ready)
            usable = {t: [d for d in pool if d in ready] for t, pool in pools.items()}
            submitted = store.add_sweep(sweep, source, inventory, jobs)
            runnable = [j for j in store.runnable_jobs(submitted.id, {j.key for j in jobs})
                        if usable[j.target]]
            observer.sweep_started(sweep.name, len(runnable), len(jobs))
            scheduler = Scheduler(store, {n: workers[n] for n in ready}, usable, observer, kinds,
                                  data, sweep.retries, (submitted.id, sweep.name))
            scheduler.run(runnable)
            return store.jobs_ended_now(), refused, scheduler.cancelled, scheduler.turns_s
        finally:
            close_workers(workers)


def _placed(devices: list, observer: Observer) -> list:
    """The devices as each kind places them on the CPUs they share (pinned cores), in their
    order; what a kind says of the placement is told before anything runs."""
    placed = {}
    for kind in {kind_of(d).name: kind_of(d) for d in devices}.values():
        mine = [d for d in devices if d.kind == kind.name]
        if kind.place is not None:
            mine, notes = kind.place(mine)
            for message, fix in notes:
                observer.warning(message, fix)
        placed.update((d.name, d) for d in mine)
    return [placed[d.name] for d in devices]


def _refuse_held_devices(devices) -> None:
    """Busy for a device another farm holds on this host, before this one starts Ray (whose
    start-up would take CPU from the jobs that farm is timing). Its runner's prepare takes the
    lock itself all the same: this is a look, not the lock."""
    for device in devices:
        holder = held_here(device.name) if kind_of(device).locked_here(device) else None
        if holder is not None:
            raise Busy(refusal(device.name, "this host", holder),
                       f"wait for that run to end, or leave {device.name} out of the sweep; the "
                       f"lock is {lock_path(device.name)}")


def _quarantine_checks(store: Store, inventory: Inventory, kinds) -> dict[str, DeviceError]:
    """A quarantined device comes back only after a passing health check (`farm devices
    check`); one that fails it stays out, with the failing check."""
    from farm.devices.health import check

    refused = {}
    for name, reason in store.quarantined().items():
        if name not in kinds:
            continue
        failing = [c for c in check(inventory.by_name()[name]) if c.status == "fail"]
        if failing:
            refused[name] = DeviceError(
                f"device {name!r} is quarantined ({reason}) and its health check fails: "
                f"{failing[0].item}: {failing[0].detail}",
                f"fix it, run `farm devices check {name}`, then `farm devices release {name}`")
        else:
            store.release(name, "released: its health check passed after quarantine")
    return refused


@contextlib.contextmanager
def _heartbeat(store: Store):
    """The run's heartbeat, beaten from a thread for as long as the run lasts (preparing
    devices over SSH included), so that only a dead controller ever looks dead."""
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT_S):
            try:
                store.heartbeat()
            except FarmError:
                pass  # a busy database: the next beat will do
    thread = threading.Thread(target=beat, name="farm-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def cancel(name: str, db: str | None = None, wait_s: float = 60.0) -> dict[str, int]:
    """Stop a sweep: its queued and running jobs end `cancelled` (the run driving it kills what
    runs), done results stay. Returns the sweep's job counts afterwards."""
    _stored_sweep(name, db)
    store = Store(db)
    try:
        if store.request_cancel(name):  # a live run will do it: wait until it has
            deadline = time.monotonic() + wait_s
            while store.open_run(name) and time.monotonic() < deadline:
                time.sleep(0.5)
        return store.status_counts(store.sweep_id(name))
    finally:
        store.close()


def remove_sweep(name: str, db: str | None = None) -> int:
    """`farm sweeps rm`: remove a sweep with its jobs, results, scores and attempts, in one
    transaction (refused, Busy, while a live run drives it); its name is free again. Returns
    the number of jobs removed."""
    with contextlib.closing(ReadOnly(db)) as reader:  # no database: no sweep, and none made
        _require_sweeps(reader, name)
    store = Store(db)
    try:
        removed = store.remove_sweep(name)
    finally:
        store.close()
    if removed is None:  # removed by someone else since
        raise QueryError(f"no sweep named {name!r} in {url_shown(resolve_url(db))}",
                         "`farm status` lists the sweeps; check --db / FARM_DB")
    return removed


def release_device(inventory_file: str | Path, name: str, db: str | None = None) -> bool:
    """Return a quarantined device to service by hand; False if it was not quarantined."""
    _device(load_inventory(inventory_file), name, inventory_file)
    store = Store(db)
    try:
        return store.release(name, "released by hand (`farm devices release`)")
    finally:
        store.close()


def _clock_refusals(sweep: Sweep, inventory: Inventory, ready: dict[str, dict],
                    sweep_file) -> dict[str, DeviceError]:
    """With require_locked_clocks, the boards whose clocks were not read as locked."""
    if not sweep.require_locked_clocks:
        return {}
    refusals = {}
    for name, facts in ready.items():
        unlocked = kind_of(inventory.by_name()[name]).clocks_unlocked
        problem = unlocked(facts) if unlocked else None  # None too: a kind without such clocks
        if problem is None:
            continue
        seen, fix = problem
        refusals[name] = DeviceError(
            f"device {name!r}: its clocks {seen}, and {sweep_file} sets require_locked_clocks",
            f"{fix} (`farm devices check {name}` shows the clocks), or drop "
            "require_locked_clocks")
    return refusals


def _nothing_usable(refused: dict[str, FarmError]) -> FarmError:
    if len(refused) == 1:
        return next(iter(refused.values()))
    return DeviceError(f"none of the sweep's devices can be used ({', '.join(refused)}); nothing "
                       "was run or written", "each device's reason is printed above; `farm "
                       "devices check` shows them again")


def _refused_state(error: FarmError) -> str:
    if isinstance(error, HostKeyRefused):
        return "refused"
    return "offline" if isinstance(error, DeviceUnreachable) else "error"


def _devices_needed(store: Store, sweep: Sweep, jobs, pools) -> set[str]:
    """The devices of the pools that still have unfinished jobs (none when all are done)."""
    finished = store.finished_keys(sweep.name)
    targets = {job.target for job in jobs if job.key not in finished}
    return {device for target in targets for device in pools[target]}


def _device(inventory: Inventory, name: str, inventory_file):
    device = inventory.by_name().get(name)
    if device is None:
        known = ", ".join(inventory.by_name())
        raise ConfigError(str(inventory_file), "devices", f"no device named {name!r}",
                          f"use one of: {known}")
    return device


def check_devices(inventory_file: str | Path = DEFAULT_INVENTORY,
                  names: list[str] | None = None) -> dict[str, list]:
    """Run `farm devices check` on the named devices (all when none are named)."""
    from farm.devices.health import check

    inventory = load_inventory(inventory_file)
    devices = [_device(inventory, n, inventory_file) for n in names] if names \
        else list(inventory.devices)
    return {device.name: check(device) for device in devices}


def host_key(inventory_file: str | Path, name: str):
    """The host key a device reached over SSH presents now, beside the one pinned for it."""
    from farm.devices.trust import offer

    device = _device(load_inventory(inventory_file), name, inventory_file)
    return offer(device, str(inventory_file))


def trust(offer) -> None:
    """Pin an offered host key (host_key()) in the device's known_hosts file."""
    from farm.devices.trust import pin

    pin(offer)
