"""Fixtures that build real things: YAML files, a migrated SQLite database, cgroups."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from farm.cgroups import own_cgroup_paths

CGROUP_ROOT = Path("/sys/fs/cgroup")

REPO = Path(__file__).resolve().parent.parent
FARM = str(Path(sys.executable).parent / "farm")  # the CLI this environment installed


def farm_cli(*args, cwd=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    """`farm ARGS` as a user runs it, its output captured."""
    return subprocess.run([FARM, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env)

# tests/v2 need a cgroup v2 hierarchy. CI's host runs v1: there tests/test_cgroup_v2.py boots a
# real v2 kernel (tests/uml_kernel.py) and runs them inside it; on a v2 host they run here.
# (No conftest.py of their own: a second module named conftest would shadow this one.)
if not (CGROUP_ROOT / "cgroup.controllers").exists():
    collect_ignore_glob = ["v2/*"]


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


_beside: dict = {}  # tests/test_cgroup_v2.py, once its kernel runs beside the suite


def _in_v2_kernel(item) -> bool:
    return item.nodeid.split("::")[0].endswith("test_cgroup_v2.py")


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected theirs
def pytest_collection_modifyitems(config, items):
    """The cgroup v2 tests run in a kernel of their own (tests/test_cgroup_v2.py), on one core,
    for about 5 minutes: boot it now and take its results last, so that it runs beside the
    rest of the suite."""
    v2 = [item for item in items if _in_v2_kernel(item)]
    if v2 and len(v2) < len(items):
        items[:] = [item for item in items if not _in_v2_kernel(item)] + v2
        v2[0].module.start()
        _beside["kernel"] = v2[0].module


def pytest_runtest_setup(item):
    """torch in this process computes with one thread while the cgroup v2 kernel runs beside the
    suite, with its default (one per core) after; set before the test's fixtures, which may
    compute too. The kernel holds a core, and at every parallel op a second thread waits for
    it: kronecker of bert-base took 7.6-8.0 s with 2 threads beside a busy core, against
    3.3-3.8 s with one (2.7 s with 2 threads on an idle host)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        default = _beside.setdefault("threads", torch.get_num_threads())
        kernel = _beside.get("kernel")
        torch.set_num_threads(1 if kernel is not None and kernel.running() else default)


def pytest_sessionfinish(session):
    for item in session.items:
        if _in_v2_kernel(item):
            item.module.stop()
            break


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


@pytest.fixture(scope="session")
def jetson_python():
    """Python 3.6 with torch 1.10.2 and transformers 4.18.0, built by `make jetson-stack`."""
    path = os.environ.get("FARM_JETSON_PYTHON") or str(
        Path.home() / ".cache/farm/jetson-py36/bin/python")
    ok = subprocess.run([path, "-c", "import torch, transformers"], capture_output=True) \
        if os.path.exists(path) else None
    if ok is None or ok.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the agent on the Jetson stack; {path} is not usable")
        pytest.skip(f"no Jetson stack at {path}: run `make jetson-stack`")
    return path


QUICK = {"warmup": 1, "min_iters": 3, "min_seconds": 0.05}
# The fewest calls whose p50 has its 95% interval (agents/measure.py): tests that read p50.
QUICK_P50 = {**QUICK, "min_iters": 6}


@pytest.fixture
def boards(tmp_path, device_names):
    """start(n, envs) -> n stand-in Jetson boards (real sshd on 127.0.0.1); all stopped after."""
    from boards import make_boards, sshd_problem

    problem = sshd_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have sshd: {problem}")
        pytest.skip(problem)
    started = []

    def start(n: int, envs: list[dict] | None = None):
        made = make_boards(tmp_path / "boards", device_names(n), envs)
        for board in made:
            started.append(board)
            board.start()
        return made

    yield start
    for board in started:
        board.stop()


def children(parent: int) -> dict[int, list[bytes]]:
    """The processes whose parent is `parent`, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found[int(entry.name)] = argv
    return found


def descendants(pid: int) -> dict[int, list[bytes]]:
    """Every process below `pid`, with its command line."""
    found, todo = {}, [pid]
    while todo:
        below = children(todo.pop())
        found.update(below)
        todo += below
    return found
