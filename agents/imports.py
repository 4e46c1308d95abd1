"""Importing torch and transformers: a turn per core on a host.

An agent's first load imports torch and transformers (about 6 s of one core on the 2-core CI
machine; half of it transformers' models' common code, transformers.modeling_utils, which the
turn covers too). A sweep starts every device's agent at once, so on a host with more devices
than cores every import shares the cores and none finishes early: 4 agents on 2 cores each took
about 12 s, and the first result waited for all of them. Here at most one agent per core
imports at a time; the others wait their turn, so the first agents load at full speed. The wait
is not part of the load (load_s starts when the turn is taken).

Importing transformers also imports scipy.optimize where scipy is installed (for an object
detection loss; about a second of a core here), which no BERT-family model uses: the agent
hides scipy from it (leave_out_unused), so that farm's own scipy never slows an agent down.

The turns are lock files in the host's temporary folder, one per core, taken with flock: a lock
goes with its process, so an agent killed mid-import frees its turn. Where the folder cannot be
used (another user's), the agent imports without a turn.
"""
import contextlib
import fcntl
import os
import sys
import tempfile
import time

FOLDER = os.path.join(tempfile.gettempdir(), "farm-import-turns")
POLL_S = 0.05
# Packages transformers imports only where they are installed and a BERT-family model never
# needs: transformers checks with importlib.util.find_spec, which finds no module whose
# sys.modules entry is None.
UNUSED = ("scipy",)


def leave_out_unused():
    """Make UNUSED packages look absent to what this process imports from now on (the agent's
    entry point calls it first; a process that has imported one already keeps it)."""
    for name in UNUSED:
        sys.modules.setdefault(name, None)


def imported():
    return "transformers" in sys.modules and "torch" in sys.modules


def slots():
    return os.cpu_count() or 1


@contextlib.contextmanager
def turn(folder=FOLDER, count=None):
    """Hold one of the host's `count` (its cores) import turns (none where the turns cannot
    be kept)."""
    handle = _take(folder, count or slots())
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # closing the file releases its lock


def _take(folder, count):
    try:
        if not os.path.isdir(folder):
            os.makedirs(folder, exist_ok=True)
            os.chmod(folder, 0o1777)  # every user's agents share the host's cores
        handles = [os.fdopen(os.open(os.path.join(folder, "core-%d" % i),
                                     os.O_RDONLY | os.O_CREAT, 0o644))
                   for i in range(count)]
    except OSError:
        return None
    while True:
        for i, handle in enumerate(handles):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue
            for other in handles[:i] + handles[i + 1:]:
                other.close()
            return handle
        time.sleep(POLL_S)
