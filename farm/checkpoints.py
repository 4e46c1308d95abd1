"""A local checkpoint's files and the content hash that names its copies (on a board, in the
layer store cache).

Only the files a model is read from count (config, tokenizer, weights): a training run's extras
(optimizer state, logs, sub-folders of earlier steps) are neither hashed nor sent anywhere. A
symlink that leaves the checkpoint's folder is refused: following it would read, hash and upload
a file the checkpoint only names (`vocab.txt -> /etc/shadow` would land on a board).
"""
from __future__ import annotations

import fnmatch
import functools
import hashlib
import os
from pathlib import Path

from farm.errors import ConfigError

# What transformers reads from a checkpoint folder to build a model and its tokenizer.
MODEL_FILES = (
    "config.json",
    "pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin",
    "model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
)


def checkpoint_files(folder: Path, links_within: Path | None = None
                     ) -> tuple[dict[str, str], str]:
    """A checkpoint's model files (name -> local path) and a hash of their names and bytes.
    Symlinks may point anywhere inside `links_within` (default: the folder itself; a hub
    snapshot's files link into its repository's blobs). The bytes are read once for as long as
    no file changes size or modification time (every streamed group and every board upload asks
    again)."""
    folder = Path(folder)
    refuse_outside_links(folder, Path(links_within or folder))
    files = {p.name: str(p) for p in sorted(folder.iterdir())
             if p.is_file() and any(fnmatch.fnmatchcase(p.name, n) for n in MODEL_FILES)}
    signature = tuple((relative, local, Path(local).stat().st_size, Path(local).stat().st_mtime_ns)
                      for relative, local in files.items())
    return files, _content_hash(signature)


def refuse_outside_links(folder: Path, within: Path | None = None) -> None:
    """Every symlink directly in the folder (the only entries farm reads) must stay inside."""
    root = os.path.realpath(within or folder)
    for entry in sorted(folder.iterdir()):
        if not entry.is_symlink():
            continue
        target = os.path.realpath(entry)
        if os.path.commonpath([root, target]) != root:
            raise ConfigError(
                f"checkpoint {folder}", entry.name,
                f"is a symlink to {target}, outside the checkpoint's folder",
                f"copy the file into the folder: cp --remove-destination {target} {entry}")


@functools.lru_cache(maxsize=32)
def _content_hash(signature: tuple) -> str:
    digest = hashlib.sha256()
    for relative, local, _, _ in signature:
        digest.update(relative.encode() + b"\0")
        with open(local, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def hub_folder(hub_id: str) -> Path:
    """A hub id's snapshot in the local Hugging Face cache (nothing is downloaded)."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(hub_id, local_files_only=True))


def hub_checkpoint_files(hub_id: str) -> tuple[dict[str, str], str]:
    """checkpoint_files of a hub snapshot, whose files link into ../../blobs of its repository."""
    folder = hub_folder(hub_id)
    return checkpoint_files(folder, links_within=folder.parent.parent)
