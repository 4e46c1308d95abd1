"""Bounds on the numbers in sweep and inventory files, checked when a file is read: a value that
could never run (a batch of 10^19, an infinite timeout, more memory than the host has) is
refused there, with its file and line, before any device is prepared or any row written."""
from __future__ import annotations

import math
import os
import re
from typing import Annotated

from pydantic import BeforeValidator, Field

from farm.config import Problem

DAY_S = 86_400.0  # the longest timeout or measuring window farm accepts
MAX_BATCH = 16_384
MAX_SEQ_LEN = 1_048_576  # for a checkpoint whose config.json does not say its positions
MAX_SAMPLES = 10_000_000  # GLUE's largest evaluation split is about 40 000 examples
MAX_CPUS = 4_096  # a board's cores, which farm cannot read before it connects
MAX_MEMORY = 2**50  # 1 PiB: larger than any machine


def _plain_number(value):
    """YAML's true is not 1 (`batch_sizes: [true]` is a mistake, not a batch of one), and .inf
    or .nan bound nothing."""
    if isinstance(value, bool):
        raise Problem(f"{str(value).lower()} is not a number", "write a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise Problem(f"{value} is not a finite number", "write a number")
    return value


def whole(low: int, high: int):
    """A whole number from low to high, booleans refused."""
    return Annotated[int, BeforeValidator(_plain_number), Field(ge=low, le=high)]


def positive(high: float):
    """A finite number above 0 and at most high, booleans refused."""
    return Annotated[float, BeforeValidator(_plain_number), Field(gt=0, le=high, allow_inf_nan=False)]


def at_least_zero(high: float):
    return Annotated[float, BeforeValidator(_plain_number), Field(ge=0, le=high, allow_inf_nan=False)]


Seconds = positive(DAY_S)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}
# Decimal units as SI and the README write them. A lowercase `2gb` or `2g` is refused: those
# who write it often mean GiB (docker's -m 2g does), and GB would give a "2 GiB" Nano 1907 MiB.
_DECIMAL = {"K", "KB", "kB", "M", "MB", "G", "GB", "T", "TB"}
_SIZE_FIX = "write a size like 2GiB or 512MiB"


def parse_size(value) -> int:
    """'2GiB' -> 2147483648. KiB/MiB/GiB/TiB (any case, B optional) are powers of 2; kB/MB/GB/TB
    (or K/M/G/T) powers of 10; a bare number is bytes."""
    if isinstance(value, bool):
        raise Problem(f"{value!r} is not a memory size", _SIZE_FIX)
    size = value if isinstance(value, int) else _size_of(value)
    if size > MAX_MEMORY:
        raise Problem(f"{value!r} is more memory than any machine has", _SIZE_FIX)
    if size < 16 * 2**20:
        raise Problem(f"{value!r} is below 16 MiB, too small to start Python", _SIZE_FIX)
    return size


def _size_of(value) -> int:
    match = _SIZE.match(str(value))
    if not match:
        raise Problem(f"{value!r} is not a memory size", _SIZE_FIX)
    number, unit = match.groups()
    if unit in ("", "B", "b"):
        return int(float(number))
    power = _POWERS.get(unit[0].lower())
    if power and unit[1:].lower() in ("i", "ib"):
        return int(float(number) * 2**(10 * power))
    if power and unit in _DECIMAL:
        return int(float(number) * 10**(3 * power))
    if power and unit[1:] in ("", "b", "B"):
        binary, decimal = f"{unit[0].upper()}iB", f"{unit[0].upper()}B".replace("KB", "kB")
        raise Problem(f"{value!r} could mean {binary} or {decimal}",
                      f"write {number}{binary} ({_mib(number, 2**(10 * power))} MiB) or "
                      f"{number}{decimal} ({_mib(number, 10**(3 * power))} MiB)")
    raise Problem(f"{value!r} is not a memory size", _SIZE_FIX)


def _mib(number: str, unit: int) -> int:
    return round(float(number) * unit / 2**20)


MemorySize = Annotated[int, BeforeValidator(parse_size)]


def host_memory() -> int | None:
    """This host's RAM in bytes (MemTotal), or None where /proc/meminfo cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def host_cpus() -> int:
    return os.cpu_count() or 1


# A cgroup on this host cannot be given more memory or CPUs than the host has: the limit would
# not limit, and the figures would describe a board that does not exist.

def memory_on_this_host(memory: int) -> int:
    total = host_memory()
    if total is not None and memory > total:
        raise Problem(f"{memory / 2**30:.1f} GiB is more than this host's memory "
                      f"({total / 2**30:.1f} GiB)",
                      "write a size this host has, e.g. 2GiB")
    return memory


def cpus_on_this_host(cpus: float) -> float:
    if cpus > host_cpus():
        raise Problem(f"{cpus:g} CPUs is more than this host's {host_cpus()}",
                      f"write at most {host_cpus()}")
    return cpus


def max_positions(config: dict, default: int | None = None) -> int | None:
    """The longest input a model's configuration allows, in tokens (None: not recorded).
    RoBERTa-style models number positions from pad_token_id + 1, so 514 positions hold 512."""
    positions = config.get("max_position_embeddings", config.get("n_positions", default))
    if not isinstance(positions, int) or isinstance(positions, bool):
        return default
    if config.get("model_type", config.get("type")) in ("roberta", "xlm-roberta", "camembert"):
        positions -= int(config.get("pad_token_id", 1)) + 1
    return positions
