"""A local checkpoint's files and the content hash that names its copies (on a board, in the
layer store cache)."""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path


def checkpoint_files(folder: Path) -> tuple[dict[str, str], str]:
    """A checkpoint's files (relative name -> local path) and a hash of their names and bytes.
    The bytes are read once for as long as no file changes size or modification time (every
    streamed group and every board upload asks again)."""
    files = {str(p.relative_to(folder)): str(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    signature = tuple((relative, local, Path(local).stat().st_size, Path(local).stat().st_mtime_ns)
                      for relative, local in files.items())
    return files, _content_hash(signature)


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
