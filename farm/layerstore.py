"""Per-layer weight stores for the stream variants (format: agents/layers.py), prepared on the
controller's side, where memory is plentiful: a device that cannot hold a model cannot split it
either. One store per model and variant (its precision and methods), named by the content hash of what it is made from
(a checkpoint's bytes; a catalog entry with its seed and the torch that drew its weights), kept
under $FARM_CACHE/layer-stores (default ~/.cache/farm) and reused by every sweep. Boards get a copy
by the same hash (farm/devices/jetson.py).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from agents import catalog, layers, measure, methods, models
from agents.methods import Variant, precision
from farm.checkpoints import checkpoint_files, hub_checkpoint_files


@dataclass(frozen=True)
class LayerStore:
    folder: str  # where it is (on the controller's host, or on a board)
    digest: str
    bytes: int  # its files' total size
    prepare_s: float | None  # seconds it took to make now; None when it was there already


def cache_root() -> Path:
    return Path(os.environ.get("FARM_CACHE") or "~/.cache/farm").expanduser() / "layer-stores"


def digest(model: dict, variant: Variant) -> str:
    """The store's name: what its bytes are made from (the model, the variant's precision and
    methods, the format; and the torch that drew or quantized them where that matters)."""
    import torch
    import transformers


    if model.get("path") or model.get("hub"):
        files = checkpoint_files(Path(model["path"])) if model.get("path") \
            else hub_checkpoint_files(model["hub"])
        source = {"checkpoint": files[1]}
    else:  # random weights: the seed and the torch that draws them make the bytes
        source = {"catalog": model["name"], "entry": catalog.CATALOG[model["name"]],
                  "labels": catalog.NUM_LABELS, "seed": catalog.CATALOG_SEED,
                  "transformers": transformers.__version__}
    if variant.precision != "fp32" or "catalog" in source:  # quantized bytes depend on torch too
        source["torch"] = torch.__version__
    if variant.methods:  # only then, so that the stores of plain models keep their names
        source["methods"] = methods.stored_methods(variant)
        source["torch"] = torch.__version__  # an SVD's or a norm's last bits
    identity = dict(source, format=layers.FORMAT, precision=variant.precision)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def prepare(model: dict, variant: Variant, root: Path | None = None) -> LayerStore:
    """The store of a model as `variant` makes it (its methods applied, in its precision), made
    now unless a whole one is cached. Two devices asking for the same store at once: one makes
    it, the other waits for it (a file lock)."""
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    name = digest(model, variant)
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / layers.COMPLETE).exists():
            return LayerStore(str(folder), name, _size(folder), None)
        started = time.perf_counter()
        staging = root / f"{name}.partial-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            _write(model, variant, staging)
            (staging / layers.COMPLETE).write_text(name + "\n")
            if folder.exists():  # a broken earlier attempt
                shutil.rmtree(folder)
            staging.rename(folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return LayerStore(str(folder), name, _size(folder), time.perf_counter() - started)


def _write(model: dict, variant: Variant, folder: Path) -> None:
    built = models.build(model)
    try:
        figures = methods.apply_methods(built, variant)
        params, nonzero = models.parameter_count(built), models.nonzero_count(built)
        if not precision.streams(variant.precision):
            raise layers.StoreError(f"no {variant.precision} layer store: stream is fp32 or int8")
        built = precision.convert(built, variant.precision)
        layers.write(built, str(folder), variant.precision, params,
                     methods.stored_methods(variant), figures, nonzero)
    finally:
        del built
        measure.release_memory()
    for path in folder.iterdir():  # the store lives on disk: a device's first read is real
        layers.forget(str(path))


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
