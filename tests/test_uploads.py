"""What goes up to a board, and how: only a checkpoint's own model files, with their modes, no
pickle the controller has not read as data, and uploads that any number of devices sharing a
board may make at once. Real sshd boards on 127.0.0.1 (tests/boards.py), real SFTP."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import agents
import pytest
from conftest import QUICK
from farm.errors import ConfigError

FARM = str(Path(sys.executable).parent / "farm")
CONFIG = ('{"model_type": "bert", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1, '
          '"num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 64}')


class RunsCode:
    """What a hostile pytorch_model.bin holds: unpickling it runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _device(board, tmp_path, python: str, name: str | None = None):
    """The board's inventory entry, its host key pinned (as `farm devices trust` does)."""
    import yaml

    from farm.devices import ssh
    from farm.inventory import load_inventory

    entry = board.inventory_entry(tmp_path / "known_hosts", python)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"devices": [dict(entry, name=name or board.name)]}))
    device = load_inventory(inventory).devices[0]
    target = ssh.resolve(device)
    ssh.pin(target, ssh.fetch_host_key(target))
    return device


def _checkpoint(folder: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "config.json").write_text(CONFIG)
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nword\n")
    save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(64, 16)},
              str(folder / "model.safetensors"))
    return folder


def test_a_symlink_out_of_the_checkpoint_is_refused_before_any_upload(boards, tmp_path):
    from farm.devices import jetson, ssh

    board, = boards(1)
    folder = _checkpoint(tmp_path / "ckpt")
    secret = tmp_path / "secret.txt"
    secret.write_text("the lab's API token\n")
    (folder / "vocab.txt").unlink()
    (folder / "vocab.txt").symlink_to(secret)
    connected = ssh.connect(_device(board, tmp_path, sys.executable))
    try:
        with pytest.raises(ConfigError) as refused:
            jetson.deploy_checkpoint(connected, str(board.workdir), str(folder))
    finally:
        connected.close()
    message = str(refused.value)
    print(message)
    assert "\n" not in message and str(folder) in message and "vocab.txt" in message
    assert str(secret) in message and "copy the file into the folder" in message
    assert not board.workdir.exists()

    (folder / "vocab.txt").unlink()  # a link that stays inside the folder is followed
    (folder / "words.txt").write_text("[PAD]\n")
    (folder / "vocab.txt").symlink_to("words.txt")
    from farm.checkpoints import checkpoint_files
    assert "vocab.txt" in checkpoint_files(folder)[0]


def test_uploads_keep_modes_and_carry_only_model_files_and_no_unchecked_pickle(
        boards, tmp_path):
    import torch

    from farm.devices import jetson, ssh

    board, = boards(1)
    folder = _checkpoint(tmp_path / "ckpt")
    os.chmod(folder / "vocab.txt", 0o600)
    os.chmod(folder / "model.safetensors", 0o640)
    (folder / "optimizer.pt").write_bytes(b"training state, not the model")
    marker = tmp_path / "ran"
    torch.save({"w": RunsCode(marker)}, folder / "pytorch_model.bin")  # beside the safetensors
    connected = ssh.connect(_device(board, tmp_path, sys.executable))
    try:
        copy, uploaded = jetson.deploy_checkpoint(connected, str(board.workdir), str(folder))
        assert uploaded

        # Alone, the hostile pickle is refused: nothing goes up, and its code never ran here.
        (folder / "model.safetensors").unlink()
        with pytest.raises(ConfigError) as refused:
            jetson.deploy_checkpoint(connected, str(board.workdir), str(folder))
    finally:
        connected.close()
    message = str(refused.value)
    print(message)
    assert "\n" not in message and "pytorch_model.bin" in message and "weights_only" in message
    assert not marker.exists()
    assert [p.name for p in (board.workdir / "models").iterdir()] == [Path(copy).name]

    sent = {p.name: oct(p.stat().st_mode & 0o777) for p in Path(copy).iterdir()}
    print(sent)
    assert sent == {"config.json": oct((folder / "config.json").stat().st_mode & 0o777),
                    "vocab.txt": "0o600", "pytorch_model.bin": "0o640", "COMPLETE": sent[
                        "COMPLETE"]}
    weights = torch.load(Path(copy) / "pytorch_model.bin", weights_only=True)  # farm's own file
    assert list(weights) == ["bert.embeddings.word_embeddings.weight"] and not marker.exists()


def test_an_upload_never_replaces_a_whole_one_another_uploader_made(boards, tmp_path):
    """Two uploaders of one agent to one board: the one that finishes second keeps the first's
    copy (an agent may already run from it) and drops its own."""
    import agents
    from farm.devices import jetson, ssh

    board, = boards(1)
    device = _device(board, tmp_path, sys.executable)
    first, second = ssh.connect(device), ssh.connect(device)
    first_done, late = threading.Event(), {}

    def files_after_first():
        first_done.wait(60)
        return {rel: str(Path(jetson.AGENT_HOME) / rel) for rel in agents.bundle_files()}

    def upload_late():
        late["result"] = jetson._upload(second, str(board.workdir),
                                        f"agent-{agents.content_hash()}", agents.content_hash(),
                                        files_after_first, "the agent")
    try:
        thread = threading.Thread(target=upload_late)
        thread.start()
        folder, uploaded = jetson.deploy(first, str(board.workdir))
        stamp = os.stat(Path(folder) / "COMPLETE")
        first_done.set()
        thread.join(60)
        assert uploaded and late["result"] == (folder, False)
        assert os.stat(Path(folder) / "COMPLETE").st_ino == stamp.st_ino
        assert [p.name for p in board.workdir.iterdir()] == [Path(folder).name]  # no leftovers
        assert jetson.probe(first, sys.executable, folder)["cpu_count"] >= 1
    finally:
        first.close()
        second.close()


def test_two_devices_on_one_board_prepare_at_once_and_both_run(boards, write_yaml, db_url,
                                                               tmp_path, jetson_python):
    """A 1 GiB and a 2 GiB entry on one Nano: same host and workdir, two devices. A checkpoint
    that links out of its folder is refused when the sweep is read: nothing reaches the board."""
    board, = boards(1)
    linked = _checkpoint(tmp_path / "linked")
    (linked / "vocab.txt").unlink()
    (linked / "vocab.txt").symlink_to("/etc/passwd")
    known_hosts = tmp_path / "known_hosts"
    entries = [dict(board.inventory_entry(known_hosts, jetson_python), name=f"{board.name}-{n}",
                    tags=["nano"]) for n in ("a", "b")]
    inventory = write_yaml("inventory.yaml", {"devices": entries})
    trusted = subprocess.run([FARM, "devices", "trust", entries[0]["name"], "-y", "-i",
                              str(inventory)], capture_output=True, text=True, timeout=60)
    assert trusted.returncode == 0, trusted.stderr
    # Each device named, so each is its own target and runs its own jobs (a pool would give
    # them all to whichever device is ready first).
    sweep = {"name": "shared", "devices": [e["name"] for e in entries], "batch_sizes": [1],
             "seq_lens": [16],
             "measure": QUICK, "models": [{"name": "linked", "path": str(linked)}]}
    refused = subprocess.run([FARM, "submit", str(write_yaml("linked.yaml", sweep)), "-i",
                              str(inventory), "--db", db_url],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "vocab.txt: is a symlink to /etc/passwd, outside the checkpoint's folder" in \
        refused.stderr.splitlines()[0]
    assert not Path(db_url.removeprefix("sqlite:///")).exists()
    assert not board.workdir.exists() or not any(board.workdir.iterdir())

    sweep["models"] = ["bert-tiny", "bert-mini"]
    ran = subprocess.run([FARM, "submit", str(write_yaml("sweep.yaml", sweep)), "-i",
                          str(inventory), "--db", db_url],
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        rows = db.execute("select device, status from v_results").fetchall()
    assert len(rows) == 4 and {row[1] for row in rows} == {"done"}, rows
    assert {row[0] for row in rows} == {e["name"] for e in entries}
    assert [p.name for p in board.workdir.iterdir()] == [f"agent-{agents.content_hash()}"]


def test_a_hub_snapshots_links_into_its_blobs_are_followed(tmp_path, monkeypatch):
    """The Hugging Face cache keeps a snapshot's files as links to ../../blobs: inside the
    repository, so they count as the checkpoint's own."""
    from farm.checkpoints import hub_checkpoint_files

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub-cache" / "models--farmtest--tiny-bert"
    for folder in ("refs", "blobs", f"snapshots/{revision}"):
        (repo / folder).mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "blobs" / "c0ffee").write_text(CONFIG)
    (repo / "snapshots" / revision / "config.json").symlink_to("../../blobs/c0ffee")
    # huggingface_hub reads HF_HUB_CACHE once, when first imported (other tests import it first).
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    files, _ = hub_checkpoint_files("farmtest/tiny-bert")
    assert list(files) == ["config.json"]
    (repo / "snapshots" / revision / "vocab.txt").symlink_to(tmp_path / "elsewhere.txt")
    with pytest.raises(ConfigError, match="outside the checkpoint"):
        hub_checkpoint_files("farmtest/tiny-bert")
