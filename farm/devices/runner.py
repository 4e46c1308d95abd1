"""Running jobs through an agent, whatever starts it (local process or SSH) and whatever limits it.

A (model, variant) group is loaded once per agent process and reused by the jobs that follow;
a different group gets a fresh process, so that one model's heap never inflates another's
figures. Failures are sorted here: an agent killed while its container recorded an OOM kill is
`oom` (a result, with the limit and the peak); a deadline passed is `timeout`; anything else that
ends the agent is `failed` with its stderr tail.
"""
from __future__ import annotations

import threading
import time
import uuid
from typing import Callable

import farm
from farm.cgroups import Container
from farm.devices import CANCELLED, DONE, FAILED, OOM, TIMEOUT, group_key
from farm.devices.session import AgentExited, AgentProcess, AgentSession, DeadlinePassed
from farm.errors import AgentCrashed

MIB = 1024 * 1024
AGENT_START_S = 120  # python + the agent's imports, before any model


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
        self._cancelled = threading.Event()

    def prepare(self, **context) -> dict:
        """Make the device ready; `context` (host, Ray node) is recorded with every result."""
        if self.container_factory is not None and self.container is None:
            self.container = self.container_factory()
        self.facts = {"device": self.device.name, "kind": self.device.kind,
                      "threads": self.threads, "farm": farm.__version__, **context}
        if self.container is not None:
            self.facts.update(cgroup=self.container.version,
                              memory_limit_mb=self.container.limit_bytes() / MIB)
        return self.facts

    def run(self, job: dict, on_event: Callable[[dict], None]) -> dict:
        self._cancelled.clear()
        started = time.time()
        deadline = time.monotonic() + float(job["timeout_s"])
        ooms_before = self.container.oom_kills() if self.container else 0
        try:
            load = self._ensure_loaded(job, deadline, on_event)
            result = self._measure(job, deadline, on_event)
            result.update(load)
            outcome = {"status": DONE, "error": None, "result": result}
        except JobFailed as failure:
            self._stop_agent()
            outcome = {"status": failure.status, "error": failure.error, "result": failure.result}
        except DeadlinePassed:
            self._stop_agent()
            outcome = {"status": TIMEOUT, "error": f"no result within timeout_s={job['timeout_s']}",
                       "result": self._memory_figures()}
        except AgentExited as exited:
            self._stop_agent()
            outcome = self._classify_exit(exited, ooms_before)
        outcome.update(key=job["key"], device=self.device.name, started_at=started,
                       finished_at=time.time())
        outcome["result"]["env"] = {**self.facts, **outcome["result"].get("env", {})}
        return outcome

    def _ensure_loaded(self, job: dict, deadline: float, on_event) -> dict:
        group = group_key(job)
        if self.session is not None and self.group == group:
            return dict(self.load_figures)
        self._stop_agent()
        if self.container is not None:
            self.container.reset_peak()
        on_event({"event": "phase", "job": job["key"], "phase": "loading"})
        self.session = AgentSession(self.start_agent(self.container))
        hello = self.session.expect("hello", min(deadline, time.monotonic() + AGENT_START_S))
        self.session.send({"op": "load", "model": job["model"], "variant": job["variant"],
                           "threads": self.threads, "seq_lens": job.get("seq_lens", []),
                           "cuda": bool(getattr(self.device, "cuda", False))})
        loaded = self._wait_for("loaded", job, deadline, on_event)
        self.group = group
        env = dict(hello["env"], **loaded["env"], agent=hello["agent"],
                   transformers=loaded["transformers"], torch_threads=loaded["threads"],
                   torch_device=loaded["torch_device"], energy_source=hello.get("energy_source"))
        # One load serves the group's jobs; each job links to it by this key.
        self.load_figures = {"env": env, "load": {
            "load_key": uuid.uuid4().hex, "model": job["model"], "variant": job["variant"],
            "load_s": loaded["load_s"], "load_peak_mb": loaded["load_peak_mb"],
            "load_container_peak_mb": self._container_peak_mb(),
            "cuda_load_peak_mb": loaded.get("cuda_load_peak_mb"), "params": loaded["params"],
            "agent": hello["agent"]}}
        return dict(self.load_figures)

    def _measure(self, job: dict, deadline: float, on_event) -> dict:
        if self.container is not None:
            self.container.reset_peak()
        self.session.send({"op": "run", "job": {
            k: job[k] for k in ("key", "task", "batch_size", "seq_len", "measure")}})
        result = self._wait_for("result", job, deadline, on_event)
        for field in ("event", "job"):
            result.pop(field, None)
        result.update(self._memory_figures(result.get("process_peak_mb")))
        return result

    def _wait_for(self, wanted: str, job: dict, deadline: float, on_event) -> dict:
        while True:
            event = self.session.next_event(deadline)
            kind = event.get("event")
            if kind == wanted:
                return event
            if kind == "error":
                status = OOM if event.get("kind") == "oom" else FAILED
                raise JobFailed(status, event.get("message", "agent error"),
                                self._memory_figures())
            on_event(dict(event, job=job["key"]))

    def _container_peak_mb(self) -> float | None:
        peak = self.container.peak_bytes() if self.container else None
        return peak / MIB if peak is not None else None

    def _memory_figures(self, process_peak_mb: float | None = None) -> dict:
        container_peak = self._container_peak_mb()
        limit = self.container.limit_bytes() / MIB if self.container else None
        peak = container_peak if container_peak is not None else process_peak_mb
        return {"container_peak_mb": container_peak, "process_peak_mb": process_peak_mb,
                "peak_mem_mb": peak, "memory_limit_mb": limit}

    def _classify_exit(self, exited: AgentExited, ooms_before: int) -> dict:
        figures = self._memory_figures()
        if self._cancelled.is_set():
            return {"status": CANCELLED, "error": "cancelled", "result": figures}
        if self.container is not None and self.container.oom_kills() > ooms_before:
            return {"status": OOM, "result": figures, "error":
                    f"killed by the kernel's OOM killer at the {figures['memory_limit_mb']:.0f} MiB "
                    f"limit (peak {figures['peak_mem_mb']:.0f} MiB)"}
        crash = AgentCrashed(f"agent exited with code {exited.returncode}", exited.stderr_tail)
        return {"status": FAILED, "error": str(crash), "result": figures}

    def _stop_agent(self) -> None:
        if self.session is not None:
            self.session.process.kill()
            if self.container is not None:
                self.container.kill()
            try:
                self.session.process.wait(timeout=10)
            except Exception:
                pass
        self.session, self.group = None, None

    def cancel(self) -> None:
        self._cancelled.set()
        if self.session is not None:
            self.session.process.kill()
            if self.container is not None:
                self.container.kill()

    def close(self) -> None:
        # Nothing is left to save in an idle agent; killing it (its container or process group,
        # tegrastats included) spares the interpreter's slow teardown of torch.
        self._stop_agent()
        if self.container is not None:
            self.container.remove()
            self.container = None
