"""The stream variants beside their eager model: what streaming costs (time per sample against
eager fp32), what it saves (model memory against eager's), where its time goes (reading layers,
waiting for them, computing), and whether its outputs are the eager model's (the largest logit
difference on the same first batch).

The comparison is made between results of one sweep that share model, task, batch size and
sequence length: eager on the same device where it finished there, else on another device of the
sweep (an eager run that ended oom in a small container is compared nowhere).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from agents.catalog import precision, streamed

EAGER = "fp32"


@dataclass(frozen=True)
class StreamRow:
    result: dict  # the v_results row
    eager: dict | None  # the eager fp32 result it is measured against
    reference: dict | None  # the eager result of the same precision (fp32 or int8): logits

    @property
    def latency_ratio(self) -> float | None:
        return _ratio(self.result.get("per_sample_ms"), self.eager and self.eager["per_sample_ms"])

    @property
    def memory_ratio(self) -> float | None:
        return _ratio(self.result.get("model_memory_mb"),
                      self.eager and self.eager.get("model_memory_mb"))

    @property
    def logit_gap(self) -> float | None:
        """max |logit - the eager model's logit| on the first batch."""
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


def _ratio(value: float | None, against: float | None) -> float | None:
    return value / against if value is not None and against else None


def has_streams(rows: list[dict]) -> bool:
    return any(streamed(r["variant"]) for r in rows)


def compare(rows: list[dict]) -> list[StreamRow]:
    """Every row of the sweep (eager ones too, as the reference lines), with its references."""
    def same_work(a: dict, b: dict) -> bool:
        return all(a[k] == b[k] for k in ("model", "task", "batch_size", "seq_len"))

    def eager_for(row: dict, variant: str) -> dict | None:
        done = [r for r in rows if r["variant"] == variant and r["status"] == "done"
                and same_work(r, row)]
        here = [r for r in done if r["device"] == row["device"]]
        return (here or done or [None])[0]

    compared = []
    for r in rows:
        eager = eager_for(r, EAGER)
        reference = eager_for(r, precision(r["variant"])) if streamed(r["variant"]) else None
        compared.append(StreamRow(r, eager, reference))
    return compared
