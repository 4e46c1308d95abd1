"""Fixtures that build real things: YAML files, a migrated SQLite database, cgroups."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import yaml

from farm.cgroups import CGROUP_ROOT, own_cgroup_paths

REPO = Path(__file__).resolve().parent.parent


def cgroups_problem() -> str | None:
    """Why this machine cannot give a test a memory cgroup, or None when it can."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        probe = CGROUP_ROOT / f"farm-probe-{uuid.uuid4().hex[:8]}"
    elif (CGROUP_ROOT / "memory").is_dir():
        own = own_cgroup_paths().get("memory", "/").lstrip("/")
        probe = CGROUP_ROOT / "memory" / own / f"farm-probe-{uuid.uuid4().hex[:8]}"
    else:
        return f"no cgroup memory controller under {CGROUP_ROOT}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as error:
        return f"cannot create a cgroup ({error.strerror}); run the tests as root"
    return None


@pytest.fixture(scope="session")
def cgroups():
    problem = cgroups_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have cgroups: {problem}")
        pytest.skip(problem)


@pytest.fixture
def write_yaml(tmp_path):
    def write(name: str, data) -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        return path
    return write


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'farm.db'}"


@pytest.fixture
def device_names():
    """Device names unique to one test, so that cgroups never collide with a running farm."""
    tag = uuid.uuid4().hex[:6]
    return lambda n: [f"t{tag}-{i + 1}" for i in range(n)]


QUICK = {"warmup": 1, "min_iters": 3, "min_seconds": 0.05}
