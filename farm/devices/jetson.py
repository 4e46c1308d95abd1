"""A Jetson board reached over SSH: the agent is uploaded to it by content hash and runs there,
optionally inside a cgroup of the inventory's `memory:` on the board.

The upload goes to <workdir>/agent-<hash>/ and is reused for as long as the agent's source has
that hash; a half-finished upload is never used (it is written aside, under a name of its
uploader's own, and renamed into place), so devices that share a board and workdir may prepare
at once. A local checkpoint (path:) goes the same way to <workdir>/models/<name>-<hash>/: only
its model files (farm/checkpoints.py), each with its own permission bits, and no pickle that
this host has not read as data alone first.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import posixpath
import shlex
import stat
import tempfile
import uuid
from pathlib import Path
from typing import Callable

import agents
from agents.layers import COMPLETE  # written last into an upload; the agent checks it on stores
from farm.cgroups import open_container
from farm.checkpoints import checkpoint_files
from farm.devices.lock import DeviceLock
from farm.devices.process import AGENT_HOME, agent_vars
from farm.devices.runner import AgentRunner, JobFailed
from farm.devices.ssh import Board, RemoteProcess, connect
from farm.errors import ConfigError, DeviceError
from farm.results import Status

BOARD_PYTHON = "python3"  # a board's interpreter when the inventory names none


def board_python(device) -> str:
    return device.python or BOARD_PYTHON


def deploy(board: Board, workdir: str) -> tuple[str, bool]:
    """The agent's folder on the board, and whether it had to be uploaded now."""
    digest = agents.content_hash()
    return _upload(board, workdir, f"agent-{digest}", digest, lambda: {
        relative: str(Path(AGENT_HOME) / relative) for relative in agents.bundle_files()},
        "the agent")


def deploy_checkpoint(board: Board, workdir: str, folder: str) -> tuple[str, bool]:
    """A local checkpoint's copy on the board, named by its content: (its folder there,
    whether it had to be uploaded now). Everything is checked before the first byte leaves."""
    files, digest = checkpoint_files(Path(folder))
    files = board_files(files, folder)
    with tempfile.TemporaryDirectory(prefix="farm-checkpoint-") as scratch:
        def converted() -> dict[str, str]:
            if "model.safetensors" in files:
                files["pytorch_model.bin"] = _as_torch_file(files.pop("model.safetensors"),
                                                            scratch)
            return files
        return _upload(board, workdir, f"models/{Path(folder).name}-{digest}", digest,
                       converted, f"checkpoint {folder}")


def board_files(files: dict[str, str], folder: str) -> dict[str, str]:
    """The checkpoint's files a board gets. JetPack's torch 1.10 has no weights_only: whatever
    code a pickle holds would run there. So safetensors wins over any .bin beside it (farm
    writes the board's torch file from it, _as_torch_file), and a .bin goes only once this
    host's torch has read it as data alone."""
    if "model.safetensors" in files:
        return {n: p for n, p in files.items() if not n.startswith("pytorch_model")}
    for name, path in files.items():
        if name.endswith(".bin"):
            version = Path(path).stat()
            refused = _unsafe_pickle(path, version.st_size, version.st_mtime_ns)
            if refused:
                raise ConfigError(
                    f"checkpoint {folder}", name,
                    f"torch.load(weights_only=True) refuses it ({refused}); the board's torch "
                    "1.10 would run any code it holds, so nothing was uploaded",
                    "save the weights as safetensors (save_pretrained(folder, "
                    "safe_serialization=True)), or torch.save a plain state_dict")
    return dict(files)


@functools.lru_cache(maxsize=32)
def _unsafe_pickle(path: str, size: int, mtime_ns: int) -> str | None:
    """Why a torch file is more than tensors, or None (once per version of the file)."""
    import torch

    if "weights_only" not in inspect.signature(torch.load).parameters:
        return f"this host's torch {torch.__version__} cannot check a pickle; 1.13 or later can"
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle.UnpicklingError, and whatever a corrupt file raises
        return f"{type(error).__name__}: {_gist(str(error))}"
    return None


# torch's explanations around the one line that says what the file holds
_BOILERPLATE = ("Weights only load failed", "Check the documentation", "Please file an issue",
                "WeightsUnpickler error:")


def _gist(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(_BOILERPLATE)] or lines[:1]
    return " ".join(said)[:300]


def _as_torch_file(safetensors_file: str, scratch: str) -> str:
    import torch
    from safetensors.torch import load_file

    target = str(Path(scratch) / "pytorch_model.bin")
    torch.save(load_file(safetensors_file), target)
    os.chmod(target, stat.S_IMODE(os.stat(safetensors_file).st_mode))  # the source's readers
    return target


def _upload(board: Board, workdir: str, name: str, digest: str,
            files: Callable[[], dict[str, str]], what: str) -> tuple[str, bool]:
    """Files into <workdir>/<name>/ on the board, unless a whole copy is there already (`files`
    is asked for them only then: making them may cost a conversion); (the folder, whether this
    call put it there). The copy is written under a name of this uploader's own and renamed
    into place when whole, so any number of devices on one board may upload at once: a half
    copy is never seen, and a whole one is never replaced (its content names it)."""
    base = board.home_path(workdir.rstrip("/") or "/")
    final = f"{base}/{name}"
    if board.exists(f"{final}/{COMPLETE}"):
        return final, False
    staging = f"{final}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        board.mkdir(staging)
        for relative, local in files().items():
            if "/" in relative:
                board.mkdir(f"{staging}/{posixpath.dirname(relative)}")
            board.put(local, f"{staging}/{relative}")
        board.write_text(f"{staging}/{COMPLETE}", digest + "\n")
        return final, _move_into_place(board, staging, final)
    except OSError as error:
        _remove(board, staging)
        raise DeviceError(f"cannot upload {what} to {board.name} under {base}: "
                          f"{error.strerror or error}", "check workdir: in the inventory and "
                          "the disk space on the board") from None
    except BaseException:
        _remove(board, staging)
        raise


def _move_into_place(board: Board, staging: str, final: str) -> bool:
    """Rename a whole copy into place; False when another uploader's whole copy got there
    first (ours is dropped). A copy there without COMPLETE (an upload by an older farm that
    died) is moved aside under our own name first, so two uploaders never remove each other's."""
    for _ in range(3):
        try:
            board.rename(staging, final)
            return True
        except OSError:  # the name is taken (a rename onto a non-empty folder fails)
            if board.exists(f"{final}/{COMPLETE}"):
                _remove(board, staging)
                return False
        try:
            board.rename(final, f"{staging}.broken")
            _remove(board, f"{staging}.broken")
        except FileNotFoundError:
            pass  # someone else moved it: try again
    board.rename(staging, final)
    return True


def _remove(board: Board, path: str) -> None:
    if board.alive:
        try:
            board.run(f"rm -rf {shlex.quote(path)}")
        except DeviceError:
            pass  # the board went away: the leftover is a .partial name nothing reads


def probe(board: Board, python: str, folder: str, full: bool = False) -> dict:
    """Facts read on the board by agents/probe.py with the board's own interpreter."""
    code, out, err = board.run(
        f"cd {shlex.quote(folder)} && {shlex.join([python, '-m', 'agents.probe'])}"
        + (" --full" if full else ""), timeout_s=300 if full else 60)
    return read_probe(code, out, err, board.name, python)


def read_probe(code: int, out: str, err: str, where: str, python: str) -> dict:
    """The facts agents/probe.py printed (its last stdout line), or why it could not run."""
    lines = out.strip().splitlines()
    if code != 0 or not lines:
        tail = " | ".join(err.strip().splitlines()[-3:]) or f"exit status {code}"
        raise DeviceError(f"{where}: {python} cannot run the agent: {tail}",
                          "set python: in the inventory to an interpreter with torch and "
                          "transformers (on JetPack 4.6: /usr/bin/python3)")
    return json.loads(lines[-1])


class JetsonRunner(AgentRunner):
    def __init__(self, device):
        super().__init__(device, self._start_agent, threads=int(device.cpus or 0) or 1)
        self.board: Board | None = None
        self.folder: str | None = None
        self.python = board_python(device)
        self.checkpoints: dict[str, str] = {}  # local checkpoint -> its copy on the board

    def prepare(self, owner=None, **context) -> dict:
        if self.board is None or not self.board.alive:
            self.board = connect(self.device)
        self.folder, uploaded = deploy(self.board, self.device.workdir)
        board_facts = probe(self.board, self.python, self.folder)  # the interpreter works
        self.hold(owner)  # taken with it, before anything on the board is made or run for jobs
        if not self.device.cpus:  # torch threads: every CPU the board has online
            self.threads = int(board_facts.get("cpu_count") or 1)
        if self.device.memory is not None and self.container is None:
            board = self.board
            self.container_factory = lambda: open_container(
                self.device.name, self.device.memory, self.device.cpus, host=board)
        facts = super().prepare(owner, **context)
        facts.update(
            ssh=f"{self.board.target.user}@{self.board.target.hostname}:{self.board.target.port}",
            agent_upload="uploaded" if uploaded else "reused", agent_dir=self.folder,
            **{k: board_facts.get(k) for k in (
                "l4t", "power_mode", "power_mode_id", "clocks_locked", "tegrastats")})
        return facts

    def device_lock(self) -> DeviceLock:
        """The lock lives on the board, held by its own interpreter over this connection."""
        return DeviceLock(self.device.name, self.board, self.python)

    def model_on_device(self, model: dict) -> dict:
        """The board loads its own copy of a local checkpoint."""
        path = model.get("path")
        if not path:
            return model
        if path not in self.checkpoints:
            try:
                self.checkpoints[path], _ = deploy_checkpoint(self.board, self.device.workdir,
                                                              path)
            except ConfigError as error:  # the checkpoint's own fault: no retry can mend it
                raise JobFailed(Status.FAILED, str(error)) from None
        return dict(model, path=self.checkpoints[path])

    def layer_store(self, model: dict, variant):
        """The store is made on the controller's host, then copied to the board by its hash."""
        local = super().layer_store(model, variant)
        folder, _ = _upload(self.board, self.device.workdir, f"layers/{local.digest}",
                            local.digest, lambda: {p.name: str(p) for p in sorted(
                                Path(local.folder).iterdir()) if p.name != COMPLETE},
                            f"the layer store of {model['name']}")
        return dataclasses.replace(local, folder=folder)

    def _start_agent(self, container) -> RemoteProcess:
        argv = [self.python, "-m", "agents"]
        if container is not None:
            argv = container.join_command(argv)
        env = agent_vars(self.threads, self.folder)
        command = (f"cd {shlex.quote(self.folder)} && env "
                   + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
                   + " " + shlex.join(str(a) for a in argv))
        return RemoteProcess(self.board, command)

    def close(self) -> None:
        super().close()
        if self.board is not None:
            self.board.close()
            self.board = None
