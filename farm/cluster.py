"""The Ray side of a run: joining a cluster with this user's token, a worker for each device on
the node its inventory's `node:` names (one Ray actor for the devices placed alike), and whether
a node that held devices is gone.

A node is named by its id, its name (`ray start --node-name NAME`; by default its IP) or its IP,
tried in that order, so that two nodes on one host, which share an IP, can each hold devices.
Where the Ray instance declares a `farm_device:<name>` resource (the private local instance
always does), the device's actor holds it, so no second worker for that device can be placed;
where another farm's worker holds it already, the device's lock refuses this run instead.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Callable

import ray
from ray.exceptions import OutOfMemoryError, RayError, RayTaskError

from farm.devices.lock import Owner
from farm.errors import Busy, DeviceError, DeviceUnreachable, FarmError

DEVICE_RESOURCE = "farm_device:{}"
NODE_ANSWER_S = 3.0  # how long a node's raylet may take to accept a connection
LOCAL_START_S = 240.0  # how long the private local instance's node may take to register
REGISTERED_POLL_S = 0.05  # how often a starting node's registration is looked for
LOCAL_STARTS = 3  # starts of the private local instance tried before the run gives up
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


def start_local_instance(**options) -> None:
    """ray.init(address="local", **options), within local_start(), tried LOCAL_STARTS times
    where Ray's own start gives up on a node that is slow to come up (its processes are
    stopped before the next try)."""
    for attempt in range(1, LOCAL_STARTS + 1):
        try:
            with local_start(LOCAL_START_S):
                ray.init(address="local", **options)
            return
        except Exception as error:  # Ray's bare Exception when the node never registered
            if not isinstance(error, RayletEnded) and "timed out during startup" not in str(error):
                raise
            if attempt == LOCAL_STARTS:
                raise DeviceError(f"Ray's local node did not come up in {LOCAL_STARTS} starts",
                                  "the machine is too busy to start Ray; its logs are in "
                                  "/tmp/ray/session_latest/logs") from None


class RayletEnded(Exception):
    """The private instance's raylet ended before its node registered (it gave up on its
    agents). Not a RuntimeError, which Ray's own start takes for "not yet" and asks again
    until its 30 s are up: this one ends the start at once."""


@contextlib.contextmanager
def local_start(seconds: float):
    """While ray.init starts the private local instance: no autoscaler monitor and no log
    monitor, and `seconds`, not Ray's 30, for its node to register.

    Ray's start has waits of its own that a slow or shared core overruns (the cgroup v2 test
    kernel: one emulated core, where each of Ray's Python processes spends 15-20 s importing
    Ray; a small board as the controller): its raylet gives its two agents a fixed time to
    come up, and ray.init gives the node a fixed 30 s to register (ray/_private/node.py, Ray
    2.60), else "The current node timed out during startup". Three of the Python processes a
    head starts do nothing for this instance: the autoscaler's monitor (it has nothing to
    scale), the log monitor (its output goes to no driver: log_to_driver=False) and the
    dashboard's head, which Ray starts even with include_dashboard=False (for its usage
    statistics alone) and waits for before it goes on; without them the agents have the core
    to themselves sooner. ray.init takes none of these settings, so the head's parameters
    are set as its Node is made (and a Node that gave up stops what it started); and Ray's
    look for the node (services.get_node, RuntimeError until it is there) is made once the
    node is listed (registered), keeps looking until `seconds` have passed, and where the
    raylet has ended, ends the start at once (RayletEnded). Another Ray, without these names, starts as it would."""
    from ray._private import node, services
    made, look = node.Node.__init__, getattr(services, "get_node", None)
    if look is None:
        yield
        return
    deadline, starting = time.monotonic() + seconds, []

    def make(self, ray_params, *args, **kwargs):
        if kwargs.get("head"):
            ray_params.no_monitor, ray_params.include_log_monitor = True, False
            self.start_api_server = no_api_server
        starting.append(self)
        try:
            made(self, ray_params, *args, **kwargs)
        except Exception:  # a start that gave up: what it started stops (the next try starts anew)
            with contextlib.suppress(Exception):
                self.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
            raise

    def no_api_server(**kwargs):  # Node.start_api_server: the dashboard's head
        pass

    def raylet_gone() -> bool:  # it gave up on its agents: the node will never register
        return any(info.process.poll() is not None for started in starting[-1:]
                   for info in started.all_processes.get("raylet", []))

    def get_node(gcs_address, node_id, *args, **kwargs):
        registered(gcs_address, node_id, deadline, raylet_gone)
        while True:
            try:
                return look(gcs_address, node_id, *args, **kwargs)
            except RuntimeError:
                if raylet_gone():
                    raise RayletEnded("the raylet ended before its node registered") from None
                if time.monotonic() >= deadline:
                    time.sleep(0.5)  # Ray asks again at once until its own 30 s are up
                    raise
                time.sleep(0.5)

    node.Node.__init__, services.get_node = make, get_node
    try:
        yield
    finally:
        node.Node.__init__, services.get_node = made, look


def registered(gcs_address: str, node_id: str, deadline: float,
               gone: Callable[[], bool]) -> None:
    """Return once the GCS lists the node alive (or when it will not: the raylet gone, the
    deadline passed, the table unreadable; Ray's own look says why). Ray's look for a node
    that has not registered yet waits a whole second before it asks again (its C++
    GlobalStateAccessor::GetNode), and the node of a local start registers a moment after the
    first ask: up to a second of each start spent waiting (README, "Running on a Ray
    cluster"). Here the table is asked every REGISTERED_POLL_S, or less often where asking
    takes longer."""
    from ray._private import services, state
    table = state.GlobalState()
    try:
        table._initialize_global_state(services._get_gcs_client_options(gcs_address))
        while time.monotonic() < deadline and not gone():
            asked = time.monotonic()
            if any(node["NodeID"] == node_id and node["Alive"] for node in table.node_table()):
                return
            # at most a tenth of a core on asking, where a slow one (the test kernel's)
            # starts the raylet's agents
            time.sleep(max(REGISTERED_POLL_S, 9 * (time.monotonic() - asked)))
    except Exception:  # a Ray whose table reads otherwise: its own look waits as it does
        return
    finally:
        with contextlib.suppress(Exception):
            table.disconnect()


def run_at_niceness(niceness: int) -> int:
    """Give every thread of this process `niceness` where the system allows it; return the
    niceness the calling thread has then.

    Ray starts its workers at niceness 15 (its worker_niceness), and an agent started from a
    device's worker inherits it: where the scheduler weighs it against other processes by
    niceness (no cgroup or autogroup of its own between them), it would lose a shared core to
    anything else, in its timed window too. Linux keeps a niceness per thread and a new thread
    or process takes its creator's, so every thread is set and the agents started later from
    any of them run at `niceness`. Lowering a niceness needs root (CAP_SYS_NICE) or
    RLIMIT_NICE; where neither allows it the niceness stays, and the agent records the one it
    ran at (its env's `niceness`)."""
    try:
        threads = [int(thread) for thread in os.listdir("/proc/self/task")]
    except OSError:  # no /proc: the calling thread alone
        threads = [0]
    for thread in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, thread, niceness)
        except OSError:  # not allowed, or the thread has just ended
            pass
    return os.getpriority(os.PRIO_PROCESS, 0)


@ray.remote(num_cpus=0)
class DeviceWorker:
    """The devices placed alike (pinned to one node, or holding resources one node declares, or
    neither), each with its runner, in one Ray worker. A Ray worker costs about a second of a
    core to start and 125 MiB to keep (README), and a sweep's devices all start theirs at
    once, while their agents import: one per device kept the cores busy with Ray's start-up
    for seconds before the first job, and dozens of boards driven from one node would each
    have held one. A device's calls run on threads of their own (max_concurrency), each runner
    on its own."""

    def __init__(self, devices: list):
        self.devices = {device.name: device for device in devices}
        self.runners: dict = {}
        self.pending_events = {device.name: deque() for device in devices}

    def prepare(self, device: str, owner: Owner | None = None,
                niceness: int | None = None) -> dict:
        from farm.devices import runner_for
        if niceness is not None:  # before any agent starts: they inherit it
            run_at_niceness(niceness)
        if device not in self.runners:  # here, not in __init__: a device that cannot have one
            self.runners[device] = runner_for(self.devices[device])  # is refused alone
        runner = self.runners[device]
        facts = runner.prepare(owner, host=socket.gethostname(),
                               ray_node=ray.get_runtime_context().get_node_id())
        runner.warm()  # its imports overlap what the controller still prepares
        return facts

    def run_job(self, device: str, job: dict, texts: list | None = None) -> dict:
        if texts is not None:  # a task's examples travel once per task, as a Ray object
            job = dict(job, texts=texts)
        return self.runners[device].run(job, self.pending_events[device].append)

    def events(self, devices: list[str]) -> dict[str, list[dict]]:
        """What each of `devices` has reported since it was last asked."""
        drained: dict[str, list[dict]] = {}
        for device in devices:
            pending, drained[device] = self.pending_events[device], []
            while pending:
                drained[device].append(pending.popleft())
        return drained

    def cancel(self, device: str) -> None:
        self.runners[device].cancel()

    def close(self, device: str) -> None:
        if device in self.runners:
            self.runners[device].close()

    def node(self, device: str) -> str:
        return ray.get_runtime_context().get_node_id()


class Worker:
    """One device's calls of the DeviceWorker it shares, as the controller makes them
    (`worker.run_job.remote(job, texts)`): the device's name goes first."""

    def __init__(self, actor, device: str):
        self.actor, self.device = actor, device

    def __getattr__(self, method: str) -> _Call:
        if method.startswith("_"):  # copy's and pickle's looks, before __init__ has run
            raise AttributeError(method)
        return _Call(getattr(self.actor, method), self.device)


def ask_events(workers: dict[str, Worker], devices: list[str]) -> dict[object, list[str]]:
    """One DeviceWorker.events call for each worker process that holds some of `devices`: the
    call's ObjectRef -> the devices it asks for (a dozen boards on one node: one call)."""
    asked: dict[int, tuple[object, list[str]]] = {}
    for device in devices:
        actor = workers[device].actor
        asked.setdefault(id(actor), (actor, []))[1].append(device)
    return {actor.events.remote(mine): mine for actor, mine in asked.values()}


def sharing(workers: dict[str, object], device: str) -> list[str]:
    """The devices whose calls go to the same worker process as device's, device among them."""
    actor = getattr(workers[device], "actor", None)
    if actor is None:
        return [device]
    return [name for name, worker in workers.items() if getattr(worker, "actor", None) is actor]


class _Call:
    def __init__(self, method, device: str):
        self.method, self.device = method, device

    def remote(self, *args):
        return self.method.remote(self.device, *args)


class Unplaced:
    """A device that got no actor: the node its inventory names is not in the cluster."""

    def __init__(self, error: FarmError):
        self.error = error


def start_workers(devices: list) -> dict[str, Worker | Unplaced]:
    """A worker for each device: one actor (DeviceWorker) for the devices that must run on the
    same node, the one their `node:` names or the one that declares their `farm_device:<name>`
    resources, and one for those that may run anywhere. The actor is kept on its node and holds
    its devices' declared resources that are free. A device whose `node:` cannot be found gets
    an Unplaced (prepare_workers refuses that device alone)."""
    declared = {resource: entry["NodeID"] for entry in ray.nodes() if entry["Alive"]
                for resource in entry.get("Resources", {})
                if resource.startswith(DEVICE_RESOURCE.format(""))}
    # A resource another worker holds now (another farm's, on a cluster they share) is not
    # asked for: the actor would wait, unplaced and silent, until that run ended. Kept on its
    # node all the same, it is readied, and the device's lock refuses it (Busy), naming the
    # run that holds it.
    free = {resource for resource, count in ray.available_resources().items()
            if resource in declared and count >= 1}
    pinned: dict[str, str] = {}  # node: as written -> its node's id
    groups: dict[str | None, list] = {}  # node id (None: anywhere) -> its devices
    workers: dict[str, Worker | Unplaced] = {}
    for device in devices:
        try:
            if device.node and device.node not in pinned:
                pinned[device.node] = placement(device.node)["scheduling_strategy"].node_id
        except DeviceError as error:
            workers[device.name] = Unplaced(error)
            continue
        node = pinned[device.node] if device.node else declared.get(
            DEVICE_RESOURCE.format(device.name))
        groups.setdefault(node, []).append(device)
    for node, group in groups.items():
        # A thread for each device's job and one for its other calls (events, cancel).
        options: dict = {"max_concurrency": 2 * len(group) + 1}
        if node is not None:  # its id, looked up already: no second reading of Ray's nodes
            options.update(on_node(node))
        held = {DEVICE_RESOURCE.format(d.name): 1 for d in group
                if DEVICE_RESOURCE.format(d.name) in free}
        if held:
            options["resources"] = held
        actor = DeviceWorker.options(**options).remote(group)
        workers.update((device.name, Worker(actor, device.name)) for device in group)
    return {device.name: workers[device.name] for device in devices}


def prepare_workers(workers: dict[str, object], owner: Owner | None = None
                    ) -> tuple[dict[str, dict], dict[str, FarmError]]:
    """Ready every device (in parallel) before anything is written: the facts of those that are
    ready, and farm's own error for each that is not. Raises Busy, once every device has
    answered, if another farm holds one of them: the run stops there, as when its database
    says so, and no device is marked broken for being in use."""
    # The agents run at this process's niceness (that of `farm submit`), not at Ray's for its
    # workers.
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    refs = {name: worker.prepare.remote(owner, niceness) for name, worker in workers.items()
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
        except RayError as error:  # the worker died, or Ray stopped it
            refused[name] = DeviceError(f"device {name!r}: its worker died: {why_lost(error)}")
    busy = [error for error in refused.values() if isinstance(error, Busy)]
    if busy:
        raise busy[0]
    return ready, refused


def close_workers(workers: dict[str, object]) -> None:
    """Each live worker empties and releases its device before it is killed (one that died,
    with its node or alone, answers at once with an error: the others are still waited for)."""
    placed = [w for w in workers.values() if not isinstance(w, Unplaced)]
    refs = [w.close.remote() for w in placed]
    deadline = time.monotonic() + 60
    for ref in refs:
        try:
            ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
        except RayError:
            pass
    for actor in {id(w.actor): w.actor for w in placed}.values():
        ray.kill(actor)


def on_node(node_id: str) -> dict:
    """Ray options that keep an actor on the node of this id."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}


def placement(node: str) -> dict:
    """Ray options that keep an actor on the live node `node:` names."""
    alive = [entry for entry in ray.nodes() if entry["Alive"]]
    for field in ("NodeID", "NodeName", "NodeManagerAddress"):
        found = [entry for entry in alive if entry.get(field) == node]
        if len(found) > 1:
            raise DeviceError(f"{len(found)} live Ray nodes answer to node: {node!r} "
                              f"({', '.join(described(e) for e in found)})",
                              "give each its own name (ray start --node-name NAME) and write "
                              "that name, or write a node id")
        if found:
            return on_node(found[0]["NodeID"])
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


def why_lost(error: Exception) -> str:
    """Why a call of a worker failed, in a line: Ray's own message for its memory monitor's
    stop is a page of process tables."""
    if isinstance(error, OutOfMemoryError):
        return ("Ray's memory monitor stopped it: its node's memory was over Ray's threshold "
                "(RAY_memory_usage_threshold; farm's own Ray runs without the monitor, each "
                "agent held by its device's memory limit)")
    return first_line(error)


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[-1][:300]
