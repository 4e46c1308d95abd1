"""Sweep files: what to measure. A sweep expands into jobs, each with a stable content key, so
that submitting the same file again finds the jobs it already has.

    name: demo
    devices: [nano-2gb]        # device names or tags (a tag is a pool of interchangeable devices)
    models: [bert-tiny, {name: mine, path: checkpoints/mine}]
    variants: [fp32, int8, {name: heads-50, prune_heads: 0.5}]   # names, or mappings (agents.methods)
    tasks: [synthetic]         # or GLUE tasks: cola, sst2, mrpc, stsb, qqp, mnli-m, mnli-mm, ...
    data_dir: glue_data        # GLUE tasks: the GLUE distribution's folders (else the datasets cache)
    max_samples: 500           # GLUE tasks: the first N evaluation examples (default: all)
    batch_sizes: [1, 8]
    seq_lens: [128]
    measure: {warmup: 3, min_iters: 10, min_seconds: 1.0}
    timeout_s: 600
    retries: 2                 # infrastructure failures retried, on another device where one is free
    repeats: 1                 # each job measured N times, each in a fresh agent (farm compare)
    require_locked_clocks: false   # true: refuse Jetson boards whose clocks are not locked
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationInfo, field_serializer,
                      field_validator, model_validator)

from agents.catalog import CATALOG, SYNTHETIC
from agents.methods import MethodError, Variant, expand_entry
from agents.spelling import with_guess
from farm.checkpoints import refuse_outside_links
from farm.config import Problem, field_name, load_spec
from farm.errors import ConfigError
from farm.glue.data import Examples, read_examples
from farm.glue.labels import LabelMismatch, Outputs, outputs_for
from farm.glue.tasks import TASKS as GLUE_TASKS
from farm.inventory import Inventory, Name
from farm.limits import (DAY_S, MAX_BATCH, MAX_SAMPLES, MAX_SEQ_LEN, Seconds, at_least_zero,
                         max_positions, positive, whole)

TASKS = (SYNTHETIC, *GLUE_TASKS)
MAX_REPEATS = 1000


class Measure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    warmup: whole(0, 100_000) = 3
    min_iters: whole(1, 10_000_000) = 10
    min_seconds: at_least_zero(DAY_S) = 1.0
    # Time enough calls that this percentile has its 95% interval (p99: 368 calls), within
    # max_seconds; a percentile without one is stored NULL (agents/measure.py).
    percentile: Literal[50, 90, 95, 99] | None = None
    max_seconds: positive(DAY_S) | None = None

    @field_validator("max_seconds")
    @classmethod
    def _after_min_seconds(cls, value, info: ValidationInfo):
        if value is not None and value < info.data.get("min_seconds", 0):
            raise ValueError("max_seconds must be at least min_seconds")
        return value

    def identity(self) -> dict:
        """What a job key holds of it: the first release's three settings always, later ones
        only where set, so that the jobs of earlier sweeps keep their keys."""
        return self.model_dump(exclude={"percentile", "max_seconds"}) | self.model_dump(
            include={"percentile", "max_seconds"}, exclude_none=True)


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    path: str | None = None  # a local checkpoint directory (config, weights, tokenizer)
    hub: str | None = None  # a hub id already in the local Hugging Face cache (never fetched)
    # Fine-tuned checkpoints are per task: task -> checkpoint directory (path: is the fallback).
    paths: dict[str, str] | None = None

    def as_job(self) -> dict:
        job = {"name": self.name, "path": self.path}
        if self.hub:  # only when set, so that keys of catalog and path models stay as they were
            job["hub"] = self.hub
        return job

    def for_task(self, task: str) -> ModelRef:
        """The model a task's jobs load: its own checkpoint where paths: names one."""
        path = (self.paths or {}).get(task, self.path)
        return ModelRef(name=self.name, path=path, hub=None if path else self.hub)

    @property
    def catalog(self) -> bool:
        """Built from the catalog's configuration with random weights: no score."""
        return not (self.path or self.hub or self.paths)


class Sweep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    name: Name
    devices: tuple[str, ...] | None = None
    models: tuple[ModelRef, ...] = Field(min_length=1)
    # Each a name of earlier releases (fp32, int8, stream+prefetch ...) or a mapping: name,
    # precision, execution and methods with their parameters (agents.methods).
    variants: tuple[Variant, ...] = Field(("fp32",), min_length=1, validate_default=True)
    tasks: tuple[str, ...] = Field((SYNTHETIC,), min_length=1)
    data_dir: str | None = None  # GLUE: the distribution's layout; None: the datasets cache
    max_samples: whole(1, MAX_SAMPLES) | None = None  # GLUE: the first N examples of each task
    batch_sizes: tuple[whole(1, MAX_BATCH), ...] = Field((1,), min_length=1)
    # Each also within every model's positions (_seq_lens_fit_models).
    seq_lens: tuple[whole(1, MAX_SEQ_LEN), ...] = Field((128,), min_length=1)
    measure: Measure = Measure()
    timeout_s: Seconds = 600
    retries: whole(0, 100) = 2  # infrastructure failures a job may have before it ends failed
    # Each job measured this many times, each in a fresh agent process, the sweep's rounds
    # interleaved (farm.controller.interleaved): `farm compare` then sees between-process spread.
    repeats: whole(1, MAX_REPEATS) = 1
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
        for i, ref in enumerate(models):
            if ref.path and ref.hub:
                raise Problem(f"model {ref.name!r} has both path: and hub:", "keep one of them")
            if ref.hub:
                _check_cached(ref)
                continue
            if ref.path is None and not ref.paths and ref.name not in CATALOG:
                raise Problem(f"unknown model {ref.name!r}", with_guess(
                    ref.name, CATALOG, f"use a catalog name ({', '.join(sorted(CATALOG))}) or "
                    "add path:"))
            places = {("path",): ref.path} if ref.path is not None else {}
            for task, path in (ref.paths or {}).items():
                if task not in GLUE_TASKS:
                    raise Problem(f"model {ref.name!r}: paths: names an unknown task {task!r}",
                                  with_guess(task, GLUE_TASKS,
                                             f"use GLUE task names: {', '.join(GLUE_TASKS)}"),
                                  ("models", i, "paths", task))
                places[("paths", task)] = path
            for where, path in places.items():
                if not (base / path / "config.json").is_file():
                    raise Problem(f"model {ref.name!r}: no config.json in {base / path}",
                                  "point it at a saved checkpoint directory",
                                  ("models", i, *where))
        return models

    @field_validator("variants", mode="before")
    @classmethod
    def _typed_variants(cls, variants):
        if not isinstance(variants, (list, tuple)):
            return variants  # pydantic says "write a YAML list"
        typed: list[Variant] = []
        for i, entry in _expanded_entries(variants):
            try:
                variant = entry if isinstance(entry, Variant) else Variant.parse(entry)
            except MethodError as error:
                raise Problem(error.problem, error.fix, ("variants", i, *error.field)) from None
            twin = next((v for v in typed if v.name == variant.name), None)
            if twin is not None and twin != variant:
                raise Problem(f"variant name {variant.name!r} is used twice, for different "
                              "variants", "give each variant its own name",
                              ("variants", i, *(("name",) if isinstance(entry, dict) else ())))
            if twin is None:  # the same variant listed twice is one
                typed.append(variant)
        return tuple(typed)

    @field_serializer("variants")
    def _variant_entries(self, variants):
        """As the sweep file writes them, so that a stored sweep reads back (farm resume)."""
        return [v.entry() for v in variants]

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks):
        return _all_known(tasks, TASKS, "task")

    @model_validator(mode="after")
    def _resolve_paths(self, info: ValidationInfo):
        base = Path((info.context or {}).get("base_dir", "."))

        def resolved(path: str | None) -> str | None:
            return str((base / path).resolve()) if path else path

        refs = tuple(m.model_copy(update={
            "path": resolved(m.path),
            "paths": {t: resolved(p) for t, p in m.paths.items()} if m.paths else None})
            for m in self.models)
        object.__setattr__(self, "models", refs)
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", resolved(self.data_dir))
        return self

    @model_validator(mode="after")
    def _checkpoints_fit_tasks(self):
        """Every task of a fine-tuned model has a checkpoint, and one named for a task by paths:
        has that task's labels. (A path: checkpoint used for other tasks than its own is measured
        there for latency and memory only; its score is left empty, with the reason.)"""
        for i, ref in enumerate(self.models):
            if ref.catalog:
                continue
            for task in self.tasks:
                if not (ref.for_task(task).path or ref.for_task(task).hub):
                    raise Problem(f"model {ref.name!r} has no checkpoint for task {task!r}",
                                  f"add paths: {{{task}: DIR}} or path:", ("models", i, "paths"))
                _own_files(ref.for_task(task), ("models", i, "paths", task)
                           if task in (ref.paths or {}) else ("models", i, "path"))
            for task in (t for t in (ref.paths or {}) if t in self.tasks):
                try:
                    checkpoint_outputs(ref.for_task(task), task)
                except LabelMismatch as error:
                    raise Problem(f"model {ref.name!r}, task {task}: {error}",
                                  "use a checkpoint fine-tuned on this task, or name its labels "
                                  "in config.json (id2label)", ("models", i, "paths", task)) from None
        return self

    @model_validator(mode="after")
    def _seq_lens_fit_models(self):
        """A seq_len beyond a model's position embeddings fails inside torch, on the device,
        after the sweep was recorded: refused here instead."""
        longest = max(self.seq_lens)
        for i, ref in enumerate(self.models):
            for task in self.tasks:
                limit = _positions(ref.for_task(task))
                if limit is not None and longest > limit:
                    raise Problem(f"{longest} is longer than model {ref.name!r} allows "
                                  f"({limit} positions)", f"use seq_lens of at most {limit}",
                                  ("seq_lens", self.seq_lens.index(longest)))
        return self


def _own_files(ref: ModelRef, field: tuple) -> None:
    """A checkpoint folder whose symlinks leave it is refused when the sweep is read, before any
    device is prepared (the upload would refuse it too, one job at a time)."""
    if ref.path and Path(ref.path).is_dir():
        try:
            refuse_outside_links(Path(ref.path))
        except ConfigError as error:
            raise Problem(error.message, error.hint, field) from None


def _positions(ref: ModelRef) -> int | None:
    """The longest input a model takes (catalog models: their configuration, where transformers'
    default, 512, applies unless it says otherwise)."""
    if ref.catalog:
        entry = CATALOG[ref.name]
        return max_positions({"type": entry["type"], **entry["config"]}, 512)
    config = Path(ref.path) / "config.json" if ref.path else Path(_cached_config(ref.hub))
    try:
        parsed = json.loads(config.read_text())
        return max_positions(parsed) if isinstance(parsed, dict) else None
    except (OSError, ValueError):
        return None  # an unreadable config.json is reported where the model is loaded


def _expanded_entries(variants):
    """(index in the file, entry) of every variant the entries name: a method's list of values
    (early_exit's thresholds: [...]) is one variant per value (agents.methods.expand_entry)."""
    for i, listed in enumerate(variants):
        try:
            entries = [listed] if isinstance(listed, Variant) else expand_entry(listed)
        except MethodError as error:
            raise Problem(error.problem, error.fix, ("variants", i, *error.field)) from None
        for entry in entries:
            yield i, entry


def _cached_config(hub: str) -> str | None:
    """The path of a hub id's config.json in the local Hugging Face cache, if it is there."""
    from huggingface_hub import try_to_load_from_cache

    # Resolved now, not when huggingface_hub was imported, as the agent will resolve it.
    home = os.environ.get("HF_HOME")
    cache = os.environ.get("HF_HUB_CACHE") or (os.path.join(home, "hub") if home else None)
    found = try_to_load_from_cache(hub, "config.json", cache_dir=cache)
    return found if isinstance(found, str) else None


def _check_cached(ref: ModelRef) -> None:
    if _cached_config(ref.hub) is None:
        raise Problem(f"model {ref.name!r}: {ref.hub!r} is not in the local Hugging Face cache "
                      "(farm never downloads)", "fetch it once where there is a network "
                      "(huggingface-cli download), copy the cache here, or save it and use path:")


def checkpoint_outputs(model: ModelRef, task: str) -> Outputs | None:
    """What the outputs of a model's checkpoint mean for a GLUE task (None: synthetic inputs)."""
    if task not in GLUE_TASKS:
        return None
    config = Path(model.path) / "config.json" if model.path else Path(_cached_config(model.hub))
    try:
        parsed = json.loads(config.read_text())
    except (OSError, ValueError) as error:
        raise LabelMismatch(f"cannot read {config}: {error}") from None
    return outputs_for(GLUE_TASKS[task], parsed)


def read_data(sweep: Sweep) -> dict[str, Examples]:
    """Each GLUE task's evaluation examples, read before anything is written (bad files stop
    the submit with their own file and line)."""
    return {task: read_examples(task, sweep.data_dir, sweep.max_samples)
            for task in sweep.tasks if task in GLUE_TASKS}


def _all_known(values, known, what):
    for value in values:
        if value not in known:
            raise Problem(f"unknown {what} {value!r}",
                          with_guess(value, known, f"use one of: {', '.join(known)}"))
    return values


@dataclass(frozen=True)
class JobSpec:
    target: str  # the device name or tag the sweep named
    model: ModelRef
    variant: Variant
    task: str
    batch_size: int
    seq_len: int
    measure: Measure
    timeout_s: float
    seq_lens: tuple[int, ...] = ()  # all of the sweep's, so that a load counts FLOPs for each
    data: dict | None = None  # GLUE: which examples (their digest and count), None: synthetic
    scoring: dict | None = None  # GLUE: whether to score, and what each output means
    repeat: int = 1  # which of the sweep's `repeats` this measurement is (1..N)

    @property
    def identity(self) -> dict:
        """Everything that changes what is measured (timeout_s does not)."""
        # A variant of earlier releases adds its name only, so that its jobs keep their keys.
        identity = {"target": self.target, "model": self.model.as_job(),
                    **self.variant.identity(), "task": self.task, "batch_size": self.batch_size,
                    "seq_len": self.seq_len, "measure": self.measure.identity()}
        if self.data is not None:  # only then, so that synthetic jobs keep their keys
            identity["data"] = self.data
        if self.repeat > 1:  # repeat 1 is the job as it was without repeats: its key, its result
            identity["repeat"] = self.repeat
        return identity

    def runner_spec(self) -> dict:
        """What a device runner is given: the identity plus settings that do not change it."""
        return self.identity | {"timeout_s": self.timeout_s, "seq_lens": list(self.seq_lens)} | (
            self.scoring or {})

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
                              with_guess(target, known, f"use one of: {', '.join(known)}"))
        pools[target] = pool
    _check_cuda(sweep, inventory, pools, sweep_file, inventory_file)
    return pools


def _check_cuda(sweep: Sweep, inventory: Inventory, pools: dict[str, list[str]],
                sweep_file: str, inventory_file: str) -> None:
    """A CUDA-only variant needs every device that may run it to have CUDA."""
    devices = inventory.by_name()
    for i, variant in enumerate(sweep.variants):
        if not variant.cuda_only:
            continue
        for pool in pools.values():
            lacking = [name for name in pool if not devices[name].cuda]
            if lacking:
                raise ConfigError(
                    sweep_file, field_name(("variants", i)),
                    f"{variant.name} runs on CUDA only ({variant.precision}), and "
                    f"{', '.join(lacking)} has none",
                    f"drop {variant.name}, target CUDA devices only, or set cuda: true in "
                    f"{inventory_file} for devices that have a GPU")


def expand(sweep: Sweep, targets: list[str],
           data: dict[str, Examples] | None = None) -> list[JobSpec]:
    """The sweep's jobs; `data` holds each GLUE task's examples (read_data)."""
    data = data or {}
    # Once per model and task: reading a checkpoint's labels is file I/O, and jobs are many.
    inputs = {(i, task): _task_inputs(ref, task, data)
              for i, ref in enumerate(sweep.models) for task in sweep.tasks}
    jobs = [JobSpec(target, ref.for_task(task), variant, task, batch, seq, sweep.measure,
                    sweep.timeout_s, tuple(sorted(sweep.seq_lens)), *inputs[i, task])
            for target, (i, ref), variant, task, batch, seq in itertools.product(
                targets, enumerate(sweep.models), sweep.variants, sweep.tasks, sweep.batch_sizes,
                sweep.seq_lens)]
    jobs = [replace(job, repeat=r) for r in range(1, sweep.repeats + 1) for job in jobs]
    unique = {job.key: job for job in jobs}  # a value listed twice is one job
    return list(unique.values())


def _task_inputs(ref: ModelRef, task: str, data: dict[str, Examples]):
    """A GLUE job's data identity, and how its predictions are scored."""
    if task not in GLUE_TASKS:
        return None, None
    examples = data[task]
    identity = {"digest": examples.digest, "examples": len(examples)}
    if ref.catalog:
        return identity, {"evaluate": False,
                          "no_score": f"no score: {ref.name} is a catalog architecture with "
                                      "random weights"}
    try:
        outputs = checkpoint_outputs(ref.for_task(task), task)
    except LabelMismatch as error:  # a checkpoint fine-tuned for another task
        return identity, {"evaluate": False, "no_score": f"no score: {error}"}
    return identity, {"evaluate": True,
                      "outputs": list(outputs.labels) if outputs.labels else None,
                      "label_order": outputs.source}
