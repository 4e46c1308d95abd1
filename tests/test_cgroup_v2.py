"""cgroup v2 for real: the tests of tests/v2, run inside a real Linux 6.1 kernel with a pure v2
hierarchy (user-mode Linux, tests/uml_kernel.py), each reported here under its own name.

CI's host runs cgroup v1, so without this farm's v2 code would never run in a test. The kernel
boots once for all of them; inside, pytest runs as root with real Ray, real cgroups and real
processes, and writes a JUnit report that comes back through the shared filesystem.
"""
from __future__ import annotations

import ast
import os
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

import uml_kernel

V2_TESTS = Path(__file__).resolve().parent / "v2"
ON_V2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()


def _inner_tests() -> list[str]:
    """file::name of every test function in tests/v2, read from the source (no import)."""
    names = []
    for path in sorted(V2_TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        names += [f"{path.stem}::{node.name}" for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]
    return names


# uname -r first: the test below reads the kernel's release from the first line.
COMMAND = (f"uname -r; {Path(sys.executable)} -m pytest tests/v2 -p no:cacheprovider -q -rA "
           "-o console_output_style=classic --junitxml=/mnt/junit.xml")
TIMEOUT_S = 1500
_run: dict = {}  # the kernel of this session, once started


def start() -> None:
    """Boot the kernel for tests/v2 now. tests/conftest.py calls this as soon as the session's
    tests are collected (and moves these to the end), so that the kernel, on one core, runs
    beside the rest of the suite instead of after it."""
    if _run or ON_V2 or uml_kernel.problem():
        return
    out = Path(tempfile.mkdtemp(prefix="farm-v2-kernel-"))
    _run.update(out=out, since=time.monotonic(), kernel=uml_kernel.Kernel(COMMAND, out))


def running() -> bool:
    """Whether this session's kernel is still running (it holds one of the host's cores)."""
    kernel = _run.get("kernel")
    return kernel is not None and kernel.process.poll() is None


def stop() -> None:
    """The session is over: the kernel goes (whatever it was doing), and its folder."""
    kernel = _run.pop("kernel", None)
    if kernel is not None:
        kernel.stop()
        shutil.rmtree(_run.pop("out"), ignore_errors=True)


@pytest.fixture(scope="module")
def v2_kernel_run():
    if ON_V2:
        pytest.skip("this host runs cgroup v2: tests/v2 run here directly")
    problem = uml_kernel.problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the cgroup v2 tests: {problem}")
        pytest.skip(problem)
    start()
    booted = _run["kernel"].wait(timeout=max(60.0, TIMEOUT_S - (time.monotonic() - _run["since"])))
    report = _run["out"] / "junit.xml"
    assert report.exists(), (f"no report from the kernel (exit {booted.rc}):\n"
                             f"{booted.console[-3000:]}\n{booted.kernel_log[-3000:]}")
    cases = {}
    for case in ElementTree.parse(report).iter("testcase"):
        key = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
        problems = [child for child in case if child.tag in ("failure", "error", "skipped")]
        cases[key] = (problems[0].tag, (problems[0].get("message") or "") + "\n" +
                      (problems[0].text or "")) if problems else ("passed", "")
    print(booted.console[-6000:])
    return cases, booted.console


@pytest.mark.parametrize("test", _inner_tests())
def test_in_a_cgroup_v2_kernel(v2_kernel_run, test):
    cases, console = v2_kernel_run
    assert test in cases, f"{test} did not run in the kernel:\n{console[-3000:]}"
    outcome, detail = cases[test]
    assert outcome == "passed", f"{outcome}: {detail[-4000:]}"


def test_the_kernel_is_6_1_with_a_pure_v2_hierarchy(v2_kernel_run):
    _, console = v2_kernel_run
    assert console.splitlines()[0].startswith("6.1.")
