"""Variants beside their baselines: what a variant costs and saves against the eager fp32 model
on the same work, and whether its outputs are still the model's.

    compare(rows) -> [Compared]   every v_results row of a sweep, with its baselines

A row's baseline is the eager fp32 run (no methods) of the same model, task, batch size and
sequence length: on the same device where it finished there, else on another device of the
sweep (an fp32 run that ended oom in a small container is compared nowhere). Against it: time
per sample, model memory, parameters and FLOPs as ratios, and Δlogit, the largest |logit −
fp32's| on the first batch (catalog weights are seeded, so every variant of a catalog model
starts from the same weights; a method's Δlogit is what it changed). A streamed variant also has
a reference: the eager run of its own precision and methods, whose logits streaming must give.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from agents.methods import Variant
from farm.results import Status


def variant_of(row: dict) -> Variant:
    """A v_results row's variant: its name, and its spec where the row has one (the named
    variants of earlier releases have none)."""
    spec = row.get("variant_spec")
    return Variant.from_job({"variant": row["variant"],
                             "variant_spec": json.loads(spec) if spec else None})


@dataclass(frozen=True)
class Compared:
    result: dict  # the v_results row
    variant: Variant
    baseline: dict | None  # the eager fp32 result of the same work
    reference: dict | None  # streamed: the eager result of the same precision and methods

    @property
    def is_baseline(self) -> bool:
        return self.baseline is self.result

    def _ratio(self, column: str) -> float | None:
        value, against = self.result.get(column), self.baseline and self.baseline.get(column)
        return value / against if value is not None and against else None

    @property
    def latency_ratio(self) -> float | None:
        return self._ratio("per_sample_ms")

    @property
    def memory_ratio(self) -> float | None:
        return self._ratio("model_memory_mb")

    @property
    def params_ratio(self) -> float | None:
        return self._ratio("params")

    @property
    def flops_ratio(self) -> float | None:
        return self._ratio("flops")

    @property
    def logit_gap(self) -> float | None:
        """max |logit − eager fp32's| on the first batch."""
        if self.baseline is None or self.is_baseline:
            return None
        return logit_gap(self.result.get("logits_json"), self.baseline.get("logits_json"))

    @property
    def stream_gap(self) -> float | None:
        """Streamed: max |logit − the eager model's of the same precision and methods|."""
        if self.reference is None or self.reference is self.result:
            return None
        return logit_gap(self.result.get("logits_json"), self.reference.get("logits_json"))


def logit_gap(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    left, right = json.loads(a), json.loads(b)
    if len(left) != len(right) or any(len(x) != len(y) for x, y in zip(left, right)):
        return None
    return max((abs(x - y) for row_a, row_b in zip(left, right) for x, y in zip(row_a, row_b)),
               default=None)


def has_streams(rows: list[dict]) -> bool:
    return any(variant_of(r).streamed for r in rows)


def has_methods(rows: list[dict]) -> bool:
    return any(variant_of(r).methods for r in rows)


def compare(rows: list[dict]) -> list[Compared]:
    """Every row of the sweep (the baselines too), with its baseline and reference."""
    variants = [variant_of(r) for r in rows]

    def same_work(a: dict, b: dict) -> bool:
        return all(a[k] == b[k] for k in ("model", "task", "batch_size", "seq_len"))

    def eager(row: dict, precision: str, methods: tuple) -> dict | None:
        done = [r for r, v in zip(rows, variants) if r["status"] == Status.DONE
                and not v.streamed and v.precision == precision and v.methods == methods
                and same_work(r, row)]
        here = [r for r in done if r["device"] == row["device"]]
        return (here or done or [None])[0]

    return [Compared(r, v, eager(r, "fp32", ()),
                     eager(r, v.precision, v.methods) if v.streamed else None)
            for r, v in zip(rows, variants)]
