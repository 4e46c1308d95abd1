"""A Jetson board reached over SSH: the agent is uploaded to it by content hash and runs there,
optionally inside a cgroup of the inventory's `memory:` on the board.

The upload goes to <workdir>/agent-<hash>/ and is reused for as long as the agent's source has
that hash; a half-finished upload is never used (it is written aside and renamed into place).
A local checkpoint (path:) goes the same way to <workdir>/models/<name>-<hash>/.
"""
from __future__ import annotations

import dataclasses
import json
import posixpath
import shlex
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
from farm.devices.runner import AgentRunner
from farm.devices.ssh import Board, RemoteProcess, connect
from farm.errors import DeviceError

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
    whether it had to be uploaded now). Weights saved only as safetensors are sent as
    pytorch_model.bin, which every torch can read (JetPack's transformers 4.18 cannot read
    safetensors)."""
    files, digest = checkpoint_files(Path(folder))
    with tempfile.TemporaryDirectory(prefix="farm-checkpoint-") as scratch:
        def board_files() -> dict[str, str]:
            if "model.safetensors" in files and "pytorch_model.bin" not in files:
                files["pytorch_model.bin"] = _as_torch_file(files.pop("model.safetensors"),
                                                            scratch)
            return files
        return _upload(board, workdir, f"models/{Path(folder).name}-{digest}", digest,
                       board_files, f"checkpoint {folder}")


def _as_torch_file(safetensors_file: str, scratch: str) -> str:
    import torch
    from safetensors.torch import load_file

    target = str(Path(scratch) / "pytorch_model.bin")
    torch.save(load_file(safetensors_file), target)
    return target


def _upload(board: Board, workdir: str, name: str, digest: str,
            files: Callable[[], dict[str, str]], what: str) -> tuple[str, bool]:
    """Files into <workdir>/<name>/ on the board, unless a whole copy is there already (`files`
    is asked for them only then: making them may cost a conversion). The copy is written aside
    and renamed into place, so a half-finished one is never used."""
    base = board.home_path(workdir.rstrip("/") or "/")
    final = f"{base}/{name}"
    if board.exists(f"{final}/{COMPLETE}"):
        return final, False
    staging = f"{final}.partial-{uuid.uuid4().hex[:8]}"
    try:
        board.mkdir(staging)
        for relative, local in files().items():
            if "/" in relative:
                board.mkdir(f"{staging}/{posixpath.dirname(relative)}")
            board.put(local, f"{staging}/{relative}")
        board.write_text(f"{staging}/{COMPLETE}", digest + "\n")
        if board.exists(final):  # a broken earlier attempt, or another controller's upload
            board.run(f"rm -rf {shlex.quote(final)}")
        board.rename(staging, final)
    except OSError as error:
        raise DeviceError(f"cannot upload {what} to {board.name} under {base}: "
                          f"{error.strerror or error}",
                          "check workdir: in the inventory and the disk space on the board") from None
    return final, True


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
            self.checkpoints[path], _ = deploy_checkpoint(self.board, self.device.workdir, path)
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
