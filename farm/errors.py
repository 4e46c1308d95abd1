"""farm's one exception tree.

    FarmError                      anything farm raises on purpose; has a one-line message and a hint
    ├── ConfigError                a sweep or inventory file is wrong (names the file, the field, the fix)
    ├── DeviceError                a device could not be used
    │   ├── ContainerError         cgroups are missing, read-only or refused a setting
    │   ├── AgentCrashed           the agent process died outside a job's own failure (with its stderr tail)
    │   ├── DeviceUnreachable      the board could not be reached, the connection dropped, or its Ray node is missing
    │   └── HostKeyRefused         (SSH devices) the board's host key is unknown or changed: never auto-accepted
    ├── Busy                       another live farm run drives this sweep or holds this device
    ├── StoreError                 the database could not be opened, migrated or written
    ├── QueryError                 a `farm sql` query failed, ran too long, or tried to write (read-only there)
    └── Interrupted                the user pressed Ctrl-C during a command that stops cleanly (exit 130)

Other libraries' exceptions (SQLAlchemy, Ray, OS errors from /sys/fs/cgroup) are mapped into this
tree where they enter farm; the CLI turns a FarmError into one red line and an exit code.
"""
from __future__ import annotations


class FarmError(Exception):
    exit_code = 70

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"

    def __reduce__(self):
        # Errors cross process boundaries (Ray actors); keep every field, whatever __init__ takes.
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls, state):
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message"))
    error.__dict__.update(state)
    return error


class ConfigError(FarmError):
    exit_code = 2

    def __init__(self, file: str, field: str, problem: str, fix: str, line: int | None = None):
        where = f"{file}:{line}" if line else str(file)
        super().__init__(f"{where}: {field}: {problem}", fix)
        self.file, self.field, self.line = file, field, line


class DeviceError(FarmError):
    exit_code = 3


class ContainerError(DeviceError):
    pass


class AgentCrashed(DeviceError):
    def __init__(self, message: str, stderr_tail: str = ""):
        super().__init__(message, None)
        self.stderr_tail = stderr_tail

    def __str__(self) -> str:
        tail = self.stderr_tail.strip().splitlines()[-3:]
        return self.message + (": " + " | ".join(tail) if tail else "")


class DeviceUnreachable(DeviceError):
    pass


class HostKeyRefused(DeviceError):
    pass


class Busy(FarmError):
    exit_code = 5


class StoreError(FarmError):
    exit_code = 4


class QueryError(FarmError):
    exit_code = 2  # bad input, like a bad sweep file


# Exit codes other than those of the errors above.
EXIT_OK = 0
EXIT_JOBS_FAILED = 1  # the sweep ran, but some jobs ended failed or timeout


class Interrupted(FarmError):
    exit_code = 130  # as a shell reports a command ended by Ctrl-C
