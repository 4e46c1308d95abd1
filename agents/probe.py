"""What a device offers, as one JSON object on stdout: `python -m agents.probe [--full]`.

Used when a board is prepared (quick: no torch import, so it answers in about a second) and by
`farm devices check` (--full: also imports torch and transformers, as a job would). Every figure
is read from the device; what cannot be read is null, with the reason where there is one.
"""
import json
import os
import shutil
import sys

from agents import content_hash, environment


def _cgroup():
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "v2"
    if os.path.isdir("/sys/fs/cgroup/memory"):
        return "v1"
    return None


def quick():
    facts = environment.describe()
    facts.update(agent=content_hash(), memory_available_mb=environment.meminfo_mb("MemAvailable"), cgroup=_cgroup(),
                 tegrastats=shutil.which("tegrastats"), executable=sys.executable)
    return facts


def full():
    facts = quick()
    try:
        import torch
        facts.update(environment.torch_facts(torch))
    except Exception as error:  # reported, not raised: the check shows what is wrong
        facts["torch_error"] = "%s: %s" % (type(error).__name__, error)
    try:
        import transformers
        facts["transformers"] = transformers.__version__
    except Exception as error:
        facts["transformers_error"] = "%s: %s" % (type(error).__name__, error)
    return facts


def main():
    facts = full() if "--full" in sys.argv[1:] else quick()
    sys.stdout.write(json.dumps(facts, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
