"""Running jobs through an agent, whatever starts it (local process or SSH) and whatever limits it.

A (model, variant) group is loaded once per agent process and reused by the jobs that follow;
a different group gets a fresh process, so that one model's heap never inflates another's
figures. Failures are sorted here, each with its class (farm.results.Failure: infra or job):
  - an agent killed while its container recorded an OOM kill: `oom` (a result, with the limit
    and the peak), job;
  - a deadline passed: `timeout`, job; the agent's own error event or crash: `failed`, job;
  - the agent killed from outside (SIGKILL, SIGTERM...), the connection to a board lost, or the
    device failing under us: `failed`, infra: the job itself may well succeed on a retry.
"""
from __future__ import annotations

import signal
import threading
import time
import uuid
from typing import Callable

import farm
from agents.methods import Variant
from farm import layerstore
from farm.cgroups import Container

from farm.devices import group_key
from farm.devices.lock import DeviceLock, Owner
from farm.devices.session import AgentExited, AgentProcess, AgentSession, DeadlinePassed
from farm.errors import AgentCrashed, DeviceError
from farm.results import Failure, Status

# Signals that mean someone or something outside the job ended the agent; others (SIGSEGV,
# SIGABRT, SIGBUS...) are the job's own crash.
_OUTSIDE_SIGNALS = {signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT}

MIB = 1024 * 1024
AGENT_START_S = 120  # python + the agent's imports, before any model
WATCH_S = 1.0  # how often a running job's container is checked for thrashing at its limit


def _signal_name(number: int) -> str:
    """SIGKILL; or the number, for a status no signal of this host has (a board's exit code
    above 128 is read as a signal)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


class JobFailed(Exception):
    def __init__(self, status: str, error: str, result: dict | None = None):
        super().__init__(error)
        self.status, self.error, self.result = status, error, result or {}


class AgentRunner:
    def __init__(self, device, start_agent: Callable[[Container | None], AgentProcess],
                 threads: int, container_factory: Callable[[], Container] | None = None):
        self.device, self.start_agent, self.threads = device, start_agent, threads
        self.container_factory, self.container = container_factory, None
        self.session: AgentSession | None = None
        self.group: str | None = None
        self.facts: dict = {}
        self.lock: DeviceLock | None = None
        self.peak = None  # the container's PeakWatch over the load or job under way
        self.ooms_at_start = 0  # the container's OOM kills when its agent started
        self._cancelled = threading.Event()

    def prepare(self, owner: Owner | None = None, **context) -> dict:
        """Make the device ready; `context` (host, Ray node) is recorded with every result.
        Raises Busy if another farm, whatever its database, holds the device."""
        self.hold(owner)
        if self.container_factory is not None and self.container is None:
            self.container = self.container_factory()
            self.lock.watch(self.container.paths())
        self.facts = {"device": self.device.name, "kind": self.device.kind,
                      "threads": self.threads, "farm": farm.__version__, **context}
        if self.container is not None:
            self.facts.update(cgroup=self.container.version, cores=self.container.cores,
                              memory_limit_mb=self.container.limit_bytes() / MIB)
        return self.facts

    def run(self, job: dict, on_event: Callable[[dict], None]) -> dict:
        self._cancelled.clear()
        started = time.time()
        deadline = time.monotonic() + float(job["timeout_s"])
        try:
            # An agent started before the job (warm) counts the kernel's kills from its start.
            if self._unused_agent():
                ooms_before = self.ooms_at_start
            else:
                ooms_before = self.container.oom_kills() if self.container else 0
            load = self._ensure_loaded(job, deadline, on_event)
            result = self._measure(job, deadline, on_event)
            result.update(load)
            outcome = {"status": Status.DONE, "error": None, "result": result}
        except JobFailed as failure:
            self._stop_agent()
            outcome = {"status": failure.status, "error": failure.error, "result": failure.result,
                       "failure": Failure.JOB}
        except DeadlinePassed:
            figures = self._memory_figures()
            self._stop_agent()
            outcome = {"status": Status.TIMEOUT, "failure": Failure.JOB, "result": figures,
                       "error": f"no result within timeout_s={job['timeout_s']}"}
        except AgentExited as exited:
            self._stop_agent()
            outcome = self._classify_exit(exited, ooms_before)
        except DeviceError as error:  # the device, or the way to it, failed under the job
            self._stop_agent()
            outcome = {"status": Status.FAILED, "failure": Failure.INFRA, "result": {},
                       "error": f"{self.device.name}: {error}"}
        outcome.update(key=job["key"], device=self.device.name, started_at=started,
                       finished_at=time.time())
        outcome["result"]["env"] = {**self.facts, **outcome["result"].get("env", {})}
        return outcome

    def _ensure_loaded(self, job: dict, deadline: float, on_event) -> dict:
        group = group_key(job)
        if self.session is not None and self.group == group:
            return dict(self.load_figures)
        warm = self._unused_agent()
        if not warm:
            self._stop_agent()
        model, store = self.model_on_device(job["model"]), None
        if Variant.from_job(job).streamed:
            on_event({"event": "phase", "job": job["key"], "phase": "layer store"})
            store = self._layer_store(job)
            model = dict(model, store=store.folder)
        on_event({"event": "phase", "job": job["key"], "phase": "loading"})
        if not warm:
            self._new_agent()
        hello = self.session.expect("hello", min(deadline, time.monotonic() + AGENT_START_S))
        self.session.send({"op": "load", "model": model, "variant": job["variant"],
                           "variant_spec": job.get("variant_spec"), "threads": self.threads,
                           "seq_lens": job.get("seq_lens", []),
                           "cuda": bool(getattr(self.device, "cuda", False))})
        loaded = self._wait_for("loaded", job, deadline, on_event)
        self.group = group
        load_peak_mb, load_peak_method = self._container_peak()
        env = dict(hello["env"], **loaded["env"], agent=hello["agent"],
                   transformers=loaded["transformers"], torch_threads=loaded["threads"],
                   torch_device=loaded["torch_device"], energy_source=hello.get("energy_source"))
        # One load serves the group's jobs; each job links to it by this key.
        self.load_figures = {"env": env, "load": {
            "load_key": uuid.uuid4().hex, "model": job["model"], "variant": job["variant"],
            "load_s": loaded["load_s"], "load_peak_mb": loaded["load_peak_mb"],
            "load_container_peak_mb": load_peak_mb,
            "load_container_peak_method": load_peak_method,
            "cuda_load_peak_mb": loaded.get("cuda_load_peak_mb"), "params": loaded["params"],
            "agent": hello["agent"], "baseline_mb": loaded.get("baseline_mb"),
            "layer_store": store.digest if store else None,
            "layer_store_bytes": store.bytes if store else None,
            "layer_store_prepare_s": store.prepare_s if store else None}}
        return dict(self.load_figures)

    def _unused_agent(self) -> bool:
        """An agent is running and has loaded nothing yet (warm() started it)."""
        return self.session is not None and self.group is None

    def warm(self) -> None:
        """Start the agent before the first job: it imports torch and transformers while the
        sweep's other devices are prepared and its jobs stored (their time is still the first
        load's, as the agent counts it). One that fails to start is left to the first job,
        which starts another and reports what it meets."""
        if self.session is not None:
            return
        try:
            self._new_agent()
        except Exception:
            self._stop_agent()

    def _new_agent(self) -> None:
        """A new agent (in a fresh leaf of the container where there is one), its memory
        watched from its start."""
        if self.container is not None:
            self.ooms_at_start = self.container.oom_kills()
            self.container.new_agent()
            self._watch_peak()
        self.session = AgentSession(self.start_agent(self.container))

    def _layer_store(self, job: dict) -> layerstore.LayerStore:
        try:
            return self.layer_store(job["model"], Variant.from_job(job))
        except DeviceError:
            raise
        except Exception as error:  # the model cannot be built or split: the job's own failure
            raise JobFailed(Status.FAILED, "cannot prepare the layer store of "
                            f"{job['model']['name']}: {type(error).__name__}: {error}") from None

    def hold(self, owner: Owner | None) -> None:
        """Take the device's lock before anything touches the device (its cgroup first)."""
        if self.lock is None:
            lock = self.device_lock()
            lock.take(owner or Owner())
            self.lock = lock

    def device_lock(self) -> DeviceLock:
        """The lock on the host that holds the device (here, unless a kind says otherwise)."""
        return DeviceLock(self.device.name)

    def layer_store(self, model: dict, variant: Variant) -> layerstore.LayerStore:
        """The model's per-layer weight store, as the variant makes it, where the device's agent
        can read it (a device on this host reads the controller's cache; a board gets its own
        copy)."""
        return layerstore.prepare(model, variant)

    def model_on_device(self, model: dict) -> dict:
        """The model spec as the device's agent must see it (a device with its own disk gets
        its own copy of a local checkpoint)."""
        return model

    def _measure(self, job: dict, deadline: float, on_event) -> dict:
        if self.container is not None:
            self._watch_peak()
        command = {k: job[k] for k in ("key", "task", "batch_size", "seq_len", "measure")}
        if job.get("texts") is not None:  # a GLUE task: its texts, and whether to predict them
            command.update(texts=job["texts"], evaluate=bool(job.get("evaluate")))
        self.session.send({"op": "run", "job": command})
        result = self._wait_for("result", job, deadline, on_event)
        for field in ("event", "job"):
            result.pop(field, None)
        result.update(self._memory_figures(result.get("process_peak_mb")))
        if self.peak is not None:  # the job's figures are taken: no sampling between jobs
            self.peak.close()
        return result

    def _wait_for(self, wanted: str, job: dict, deadline: float, on_event) -> dict:
        while True:
            try:
                event = self.session.next_event(min(deadline, time.monotonic() + WATCH_S))
            except DeadlinePassed:
                if time.monotonic() >= deadline:
                    raise
                self._check_thrashing()
                continue
            kind = event.get("event")
            if kind == wanted:
                return event
            if kind == "error":
                status = Status.OOM if event.get("kind") == "oom" else Status.FAILED
                raise JobFailed(status, event.get("message", "agent error"),
                                self._memory_figures())
            on_event(dict(event, job=job["key"]))

    def _watch_peak(self) -> None:
        """The container's peak counts from here (a load, a job)."""
        if self.peak is not None:
            self.peak.close()
        self.peak = self.container.watch_peak()

    def _container_peak(self) -> tuple[float | None, str | None]:
        """The peak since _watch_peak, in MiB, and how it was taken (farm.cgroups.PEAK_METHODS)."""
        if self.peak is None:
            return None, None
        try:
            peak, method = self.peak.read()
        except OSError:  # a board that went away: no figure rather than a guess
            return None, None
        return (peak / MIB, method) if peak is not None else (None, None)

    def _check_thrashing(self) -> None:
        if self.container is None:
            return
        try:
            why = self.container.thrashing()
        except OSError:
            return
        if why:
            raise JobFailed(Status.OOM, why, self._memory_figures())

    def _memory_figures(self, process_peak_mb: float | None = None) -> dict:
        """The container's peak (which counts the page cache it was charged first, so depends
        on what ran before), and the job's own memory, which does not: the agent's resident
        peak (farm.results: memory_mb), beside what the container holds of each kind."""
        container_peak, method = self._container_peak()
        limit = self.container.limit_bytes() / MIB if self.container else None
        peak = container_peak if container_peak is not None else process_peak_mb
        figures = {"container_peak_mb": container_peak, "container_peak_method": method,
                   "process_peak_mb": process_peak_mb, "peak_mem_mb": peak,
                   "memory_limit_mb": limit, "memory_mb": process_peak_mb}
        split = None
        if self.container is not None:
            try:
                split = self.container.memory_split()
            except OSError:  # a board that went away
                split = None
        for kind, value in (split or {}).items():
            figures[f"{kind}_mb"] = value / MIB
        return figures

    def _classify_exit(self, exited: AgentExited, ooms_before: int) -> dict:
        if self._cancelled.is_set():
            return {"status": Status.CANCELLED, "error": "cancelled", "result": {}}
        if exited.lost:
            return {"status": Status.FAILED, "failure": Failure.INFRA, "result": {},
                    "error": f"connection to {self.device.name} lost mid-job ({exited.lost})"}
        figures = self._memory_figures()
        try:
            oom_killed = self.container is not None and self.container.oom_kills() > ooms_before
        except OSError:
            oom_killed = False
        if oom_killed:
            return {"status": Status.OOM, "result": figures, "failure": Failure.JOB, "error":
                    f"killed by the kernel's OOM killer at the {figures['memory_limit_mb']:.0f} MiB "
                    f"limit (peak {figures['peak_mem_mb']:.0f} MiB)"}
        code = exited.returncode
        if code is None or (code < 0 and -code in _OUTSIDE_SIGNALS):
            how = "without an exit status" if code is None else f"by {_signal_name(-code)}"
            return {"status": Status.FAILED, "failure": Failure.INFRA, "result": figures,
                    "error": f"infrastructure: the agent on {self.device.name} was killed {how} "
                             "from outside farm (not by the OOM killer)"}
        how = f"signal {_signal_name(-code)}" if code < 0 else f"code {code}"
        crash = AgentCrashed(f"agent exited with {how}", exited.stderr_tail)
        return {"status": Status.FAILED, "failure": Failure.JOB, "error": str(crash),
                "result": figures}

    def _stop_agent(self) -> None:
        if self.session is not None:
            self._kill_agent(self.session)
            try:
                self.session.process.wait(timeout=10)
            except Exception:
                pass
        self.session, self.group = None, None

    def _kill_agent(self, session: AgentSession) -> None:
        try:
            session.process.kill()
            if self.container is not None:
                self.container.kill()
        except (DeviceError, OSError):
            pass  # a board out of reach: its agent ends with the connection (stdin closed)

    def cancel(self) -> None:
        self._cancelled.set()
        session = self.session
        if session is not None:
            self._kill_agent(session)

    def close(self) -> None:
        # Nothing is left to save in an idle agent; killing it (its container or process group,
        # tegrastats included) spares the interpreter's slow teardown of torch.
        try:
            self._stop_agent()
            if self.peak is not None:
                self.peak.close()
                self.peak = None
            if self.container is not None:
                self.container.remove()
                self.container = None
        finally:  # the device goes to the next owner only once it is empty
            if self.lock is not None:
                self.lock.release()
                self.lock = None
