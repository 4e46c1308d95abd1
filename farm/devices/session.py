"""A conversation with one running agent: commands in, JSON-lines events out.

Reading happens on a background thread so that waiting for an event can honour a deadline; the
last lines of the agent's stderr are kept for error messages.
"""
from __future__ import annotations

import collections
import json
import queue
import threading
import time
from typing import IO, Protocol

from farm.errors import AgentCrashed


class AgentProcess(Protocol):
    """What a session needs of a started agent: a local subprocess, or an SSH channel."""
    stdin: IO[str]
    stdout: IO[str]
    stderr: IO[str]

    def poll(self) -> int | None: ...  # negative: ended by that signal
    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...


class DeadlinePassed(Exception):
    pass


class AgentExited(Exception):
    """The agent's output ended. `returncode` is negative for a signal (as subprocess has it),
    None when unknown; `lost` says why the connection to its device ended, if it did."""

    def __init__(self, returncode: int | None, stderr_tail: str, lost: str | None = None):
        super().__init__(f"agent exited with code {returncode}")
        self.returncode, self.stderr_tail, self.lost = returncode, stderr_tail, lost


_EOF = object()


class AgentSession:
    def __init__(self, process: AgentProcess):
        self.process = process
        self.events: queue.Queue = queue.Queue()
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=40)
        threading.Thread(target=self._read_events, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_events(self) -> None:
        for line in self.process.stdout:
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                self.stderr_lines.append(f"(not an event on stdout) {line.rstrip()}")
        self.events.put(_EOF)

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr_lines.append(line.rstrip())

    def stderr_tail(self) -> str:
        return "\n".join(self.stderr_lines)

    def send(self, command: dict) -> None:
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise self._exited() from None

    def next_event(self, deadline: float) -> dict:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlinePassed()
        try:
            event = self.events.get(timeout=remaining)
        except queue.Empty:
            raise DeadlinePassed() from None
        if event is _EOF:
            raise self._exited()
        return event

    def _exited(self) -> AgentExited:
        try:
            code = self.process.wait(timeout=5)
        except Exception:
            code = self.process.poll()
        time.sleep(0.05)  # let the stderr reader catch the last lines
        lost = getattr(self.process, "lost", None)
        return AgentExited(code, self.stderr_tail(), lost)

    def expect(self, wanted: str, deadline: float) -> dict:
        event = self.next_event(deadline)
        if event.get("event") != wanted:
            raise AgentCrashed(f"agent sent {event.get('event')!r} where {wanted!r} was due",
                               self.stderr_tail())
        return event
