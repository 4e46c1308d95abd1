"""Sweep files: what to measure. A sweep expands into jobs, each with a stable content key, so
that submitting the same file again finds the jobs it already has.

    name: demo
    devices: [nano-2gb]        # device names or tags (a tag is a pool of interchangeable devices)
    models: [bert-tiny, {name: mine, path: checkpoints/mine}]
    variants: [fp32, int8]
    tasks: [synthetic]
    batch_sizes: [1, 8]
    seq_lens: [128]
    measure: {warmup: 3, min_iters: 10, min_seconds: 1.0}
    timeout_s: 600
    require_locked_clocks: false   # true: refuse Jetson boards whose clocks are not locked
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import (BaseModel, ConfigDict, Field, ValidationInfo, field_validator,
                      model_validator)

from agents.catalog import CATALOG, CUDA_ONLY_VARIANTS, TASKS, VARIANTS
from farm.config import Problem, field_name, load_spec
from farm.errors import ConfigError
from farm.inventory import Inventory, Name


class Measure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    warmup: int = Field(3, ge=0)
    min_iters: int = Field(10, ge=1)
    min_seconds: float = Field(1.0, ge=0)


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    path: str | None = None  # a local checkpoint directory (config, weights, tokenizer)
    hub: str | None = None  # a hub id already in the local Hugging Face cache (never fetched)

    def as_job(self) -> dict:
        job = {"name": self.name, "path": self.path}
        if self.hub:  # only when set, so that keys of catalog and path models stay as they were
            job["hub"] = self.hub
        return job


class Sweep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    devices: tuple[str, ...] | None = None
    models: tuple[ModelRef, ...] = Field(min_length=1)
    variants: tuple[str, ...] = Field(("fp32",), min_length=1)
    tasks: tuple[str, ...] = Field(("synthetic",), min_length=1)
    batch_sizes: tuple[Annotated[int, Field(gt=0)], ...] = Field((1,), min_length=1)
    seq_lens: tuple[Annotated[int, Field(gt=0)], ...] = Field((128,), min_length=1)
    measure: Measure = Measure()
    timeout_s: float = Field(600, gt=0)
    require_locked_clocks: bool = False  # refuse Jetson boards whose clocks scale

    @field_validator("models", mode="before")
    @classmethod
    def _names_as_refs(cls, models):
        if isinstance(models, (list, tuple)):
            return [{"name": m} if isinstance(m, str) else m for m in models]
        return models

    @field_validator("models")
    @classmethod
    def _known_models(cls, models, info: ValidationInfo):
        base = Path((info.context or {}).get("base_dir", "."))
        for ref in models:
            if ref.path and ref.hub:
                raise Problem(f"model {ref.name!r} has both path: and hub:", "keep one of them")
            if ref.hub:
                _check_cached(ref)
                continue
            if ref.path is None and ref.name not in CATALOG:
                raise Problem(f"unknown model {ref.name!r}",
                              f"use a catalog name ({', '.join(sorted(CATALOG))}) or add path:")
            if ref.path is not None and not (base / ref.path / "config.json").is_file():
                raise Problem(f"model {ref.name!r}: no config.json in {base / ref.path}",
                              "point path: at a saved checkpoint directory")
        return models

    @field_validator("variants")
    @classmethod
    def _known_variants(cls, variants):
        return _all_known(variants, VARIANTS, "variant")

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks):
        return _all_known(tasks, TASKS, "task")

    @model_validator(mode="after")
    def _resolve_paths(self, info: ValidationInfo):
        base = Path((info.context or {}).get("base_dir", "."))
        refs = tuple(ModelRef(name=m.name, path=str((base / m.path).resolve())) if m.path else m
                     for m in self.models)
        object.__setattr__(self, "models", refs)
        return self


def _check_cached(ref: ModelRef) -> None:
    from huggingface_hub import try_to_load_from_cache

    # Resolved now, not when huggingface_hub was imported, as the agent will resolve it.
    home = os.environ.get("HF_HOME")
    cache = os.environ.get("HF_HUB_CACHE") or (os.path.join(home, "hub") if home else None)
    if not isinstance(try_to_load_from_cache(ref.hub, "config.json", cache_dir=cache), str):
        raise Problem(f"model {ref.name!r}: {ref.hub!r} is not in the local Hugging Face cache "
                      "(farm never downloads)", "fetch it once where there is a network "
                      "(huggingface-cli download), copy the cache here, or save it and use path:")


def _all_known(values, known, what):
    for value in values:
        if value not in known:
            raise Problem(f"unknown {what} {value!r}", f"use one of: {', '.join(known)}")
    return values


@dataclass(frozen=True)
class JobSpec:
    target: str  # the device name or tag the sweep named
    model: ModelRef
    variant: str
    task: str
    batch_size: int
    seq_len: int
    measure: Measure
    timeout_s: float
    seq_lens: tuple[int, ...] = ()  # all of the sweep's, so that a load counts FLOPs for each

    @property
    def identity(self) -> dict:
        """Everything that changes what is measured (timeout_s does not)."""
        return {"target": self.target, "model": self.model.as_job(), "variant": self.variant,
                "task": self.task, "batch_size": self.batch_size, "seq_len": self.seq_len,
                "measure": self.measure.model_dump()}

    def runner_spec(self) -> dict:
        """What a device runner is given: the identity plus settings that do not change it."""
        return self.identity | {"timeout_s": self.timeout_s, "seq_lens": list(self.seq_lens)}

    @property
    def key(self) -> str:
        canonical = json.dumps(self.identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_sweep(path: str | Path) -> Sweep:
    return load_spec(path, Sweep, context={"base_dir": str(Path(path).resolve().parent)})


def resolve_targets(sweep: Sweep, inventory: Inventory, sweep_file: str,
                    inventory_file: str) -> dict[str, list[str]]:
    """Each target of the sweep -> the devices that may run its jobs."""
    if sweep.devices is None:
        return {"*": [d.name for d in inventory.devices]}
    pools = {}
    for i, target in enumerate(sweep.devices):
        pool = inventory.pool(target)
        if not pool:
            known = sorted(set(inventory.by_name()) | {t for d in inventory.devices for t in d.tags})
            raise ConfigError(sweep_file, field_name(("devices", i)),
                              f"no device or tag named {target!r} in {inventory_file}",
                              f"use one of: {', '.join(known)}")
        pools[target] = pool
    _check_cuda(sweep, inventory, pools, sweep_file, inventory_file)
    return pools


def _check_cuda(sweep: Sweep, inventory: Inventory, pools: dict[str, list[str]],
                sweep_file: str, inventory_file: str) -> None:
    """A CUDA-only variant needs every device that may run it to have CUDA."""
    devices = inventory.by_name()
    for variant in (v for v in sweep.variants if v in CUDA_ONLY_VARIANTS):
        for pool in pools.values():
            lacking = [name for name in pool if not devices[name].cuda]
            if lacking:
                raise ConfigError(
                    sweep_file, field_name(("variants", sweep.variants.index(variant))),
                    f"{variant} runs on CUDA only, and {', '.join(lacking)} has none",
                    f"drop {variant}, target CUDA devices only, or set cuda: true in "
                    f"{inventory_file} for devices that have a GPU")


def expand(sweep: Sweep, targets: list[str]) -> list[JobSpec]:
    jobs = [JobSpec(target, model, variant, task, batch, seq, sweep.measure, sweep.timeout_s,
                    tuple(sorted(sweep.seq_lens)))
            for target, model, variant, task, batch, seq in itertools.product(
                targets, sweep.models, sweep.variants, sweep.tasks, sweep.batch_sizes,
                sweep.seq_lens)]
    unique = {job.key: job for job in jobs}  # a value listed twice is one job
    return list(unique.values())
