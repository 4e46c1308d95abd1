"""Times as the database keeps them (naive UTC), and a run's heartbeat (farm.store.runs): a run
beats every HEARTBEAT_S, and one whose last beat is older than STALE_S is dead."""
from __future__ import annotations

from datetime import datetime, timezone

HEARTBEAT_S = 5.0
STALE_S = 30.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)
