"""The Ray side of a run: joining a cluster with this user's token, one worker (a Ray actor)
per device on the node its inventory's `node:` names, and whether a node that held devices is
gone.

A node is named by its id, its name (`ray start --node-name NAME`; by default its IP) or its IP,
tried in that order, so that two nodes on one host, which share an IP, can each hold devices.
Where the Ray instance declares a `farm_device:<name>` resource (the private local instance
always does), the device's worker holds it, so no second worker for that device can be placed.
"""
from __future__ import annotations

import os
import socket
import time
from collections import deque

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError

from farm.devices.lock import Owner
from farm.errors import Busy, DeviceError, DeviceUnreachable, FarmError

DEVICE_RESOURCE = "farm_device:{}"
NODE_ANSWER_S = 3.0  # how long a node's raylet may take to accept a connection
TOKEN_HINT = ("the cluster uses token authentication: put its token (`ray get-auth-token` where "
              "it runs) in ~/.ray/auth_token, or in RAY_AUTH_TOKEN")


def use_token() -> None:
    """Join a cluster with Ray's token authentication when this user has a token
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) and RAY_AUTH_MODE says nothing.
    Ray does so itself only for a cluster it finds (address "auto"); given an address it joins
    without the token, and `ray start --head`, which turns authentication on where a token is
    kept, refuses it. A token sent to a cluster without authentication does no harm."""
    mode = os.environ.get("RAY_AUTH_MODE")
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray from before token authentication (2.52)
        return
    found = AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)
    if mode is None and found:
        os.environ["RAY_AUTH_MODE"] = "token"
        Config.initialize("")  # Ray reads its configuration once; read it again
    elif mode == "token" and not found:
        raise DeviceError("RAY_AUTH_MODE=token, and no Ray token is here", TOKEN_HINT)


@ray.remote(num_cpus=0, max_concurrency=2)  # a second thread answers events() and cancel()
class DeviceWorker:
    def __init__(self, device):
        from farm.devices import runner_for
        self.device = device
        self.runner = runner_for(device)
        self.pending_events = deque()

    def prepare(self, owner: Owner | None = None) -> dict:
        facts = self.runner.prepare(owner, host=socket.gethostname(),
                                    ray_node=ray.get_runtime_context().get_node_id())
        self.runner.warm()  # its imports overlap what the controller still prepares
        return facts

    def run_job(self, job: dict, texts: list | None = None) -> dict:
        if texts is not None:  # a task's examples travel once per task, as a Ray object
            job = dict(job, texts=texts)
        return self.runner.run(job, self.pending_events.append)

    def events(self) -> list[dict]:
        drained = []
        while self.pending_events:
            drained.append(self.pending_events.popleft())
        return drained

    def cancel(self) -> None:
        self.runner.cancel()

    def close(self) -> None:
        self.runner.close()

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


class Unplaced:
    """A device that got no actor: the node its inventory names is not in the cluster."""

    def __init__(self, error: FarmError):
        self.error = error


def start_workers(devices: list) -> dict[str, object]:
    """One actor per device, pinned to its node where the inventory names one (an Unplaced
    where that node cannot be found: prepare_workers refuses that device alone)."""
    available = ray.cluster_resources()
    workers = {}
    for device in devices:
        options = {}
        resource = DEVICE_RESOURCE.format(device.name)
        if available.get(resource, 0) >= 1:
            options["resources"] = {resource: 1}
        try:
            if device.node:
                options.update(placement(device.node))
        except DeviceError as error:
            workers[device.name] = Unplaced(error)
            continue
        workers[device.name] = DeviceWorker.options(**options).remote(device)
    return workers


def prepare_workers(workers: dict[str, object], owner: Owner | None = None
                    ) -> tuple[dict[str, dict], dict[str, FarmError]]:
    """Ready every device (in parallel) before anything is written: the facts of those that are
    ready, and farm's own error for each that is not. Raises Busy, once every device has
    answered, if another farm holds one of them: the run stops there, as when its database
    says so, and no device is marked broken for being in use."""
    refs = {name: worker.prepare.remote(owner) for name, worker in workers.items()
            if not isinstance(worker, Unplaced)}
    ready = {}
    refused = {name: w.error for name, w in workers.items() if isinstance(w, Unplaced)}
    for name, ref in refs.items():
        try:
            ready[name] = ray.get(ref)
        except RayTaskError as error:
            cause = error.cause
            refused[name] = cause if isinstance(cause, FarmError) else DeviceError(
                f"device {name!r} failed to prepare: {cause}")
        except RayActorError as error:
            refused[name] = DeviceError(f"device {name!r}: its worker died: {first_line(error)}")
    busy = [error for error in refused.values() if isinstance(error, Busy)]
    if busy:
        raise busy[0]
    return ready, refused


def close_workers(workers: dict[str, object]) -> None:
    """Each live worker empties and releases its device before it is killed (one that died,
    with its node or alone, answers at once with an error: the others are still waited for)."""
    actors = [w for w in workers.values() if not isinstance(w, Unplaced)]
    refs = [w.close.remote() for w in actors]
    deadline = time.monotonic() + 60
    for ref in refs:
        try:
            ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
        except RayError:
            pass
    for worker in actors:
        ray.kill(worker)


def placement(node: str) -> dict:
    """Ray options that keep an actor on the live node `node:` names."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    alive = [entry for entry in ray.nodes() if entry["Alive"]]
    for field in ("NodeID", "NodeName", "NodeManagerAddress"):
        found = [entry for entry in alive if entry.get(field) == node]
        if len(found) > 1:
            raise DeviceError(f"{len(found)} live Ray nodes answer to node: {node!r} "
                              f"({', '.join(described(e) for e in found)})",
                              "give each its own name (ray start --node-name NAME) and write "
                              "that name, or write a node id")
        if found:
            return {"scheduling_strategy": NodeAffinitySchedulingStrategy(found[0]["NodeID"],
                                                                          soft=False)}
    raise DeviceUnreachable(f"no live Ray node {node!r} for a device's node:",
                            "use a live node's id, name or IP (`ray status`, `ray list nodes`), "
                            "or remove node:")


def node_gone(node_id: str) -> str | None:
    """Why the node is gone, or None while it answers. Ray's GCS declares a node dead only
    after it has missed its health checks (by default some 15 to 30 s); its raylet's refusing
    a connection says so at once."""
    try:
        entry = next((e for e in ray.nodes() if e["NodeID"] == node_id), None)
    except (RayError, OSError):  # the GCS itself is out of reach: nothing to tell of one node
        return None
    if entry is None:
        return f"Ray node {node_id[:12]} left the cluster"
    if not entry["Alive"]:
        why = entry.get("DeathReasonMessage") or "no reason given"
        return f"Ray node {described(entry)} died: {why}"
    address = (entry["NodeManagerAddress"], entry["NodeManagerPort"])
    try:
        socket.create_connection(address, timeout=NODE_ANSWER_S).close()
    except OSError as error:
        return (f"Ray node {described(entry)} is lost: its raylet at {address[0]}:{address[1]} "
                f"does not answer ({error.strerror or error})")
    return None


def described(entry: dict) -> str:
    """A node as a person finds it in `ray list nodes`: name, IP, the start of its id."""
    name, ip = entry.get("NodeName") or "", entry["NodeManagerAddress"]
    where = f"{name!r} at {ip}" if name and name != ip else ip
    return f"{where}, id {entry['NodeID'][:12]}"


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[-1][:300]
