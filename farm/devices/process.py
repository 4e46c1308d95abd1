"""Starting the agent as a local child process (for cgroup and local devices)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import agents
from farm.cgroups import Container

AGENT_HOME = Path(agents.__file__).resolve().parent.parent


def agent_vars(threads: int, home: str | Path = AGENT_HOME) -> dict[str, str]:
    """The environment farm sets for an agent, here or on a board (`home` holds agents/)."""
    return dict(
        PYTHONPATH=str(home), PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
        # Nothing may be downloaded at run time: models and data come from local files.
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")


def agent_env(threads: int) -> dict:
    return {**os.environ, **agent_vars(threads)}


class LocalAgent(subprocess.Popen):
    """The agent in its own process group, so that kill() takes any children with it."""

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_local_agent(container: Container | None, threads: int,
                      python: str | None = None) -> LocalAgent:
    argv = [python or sys.executable, "-m", "agents"]
    if container is not None:
        argv = container.join_command(argv)
    return LocalAgent(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True, bufsize=1, cwd=AGENT_HOME,
                      env=agent_env(threads), start_new_session=True)
