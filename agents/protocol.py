"""JSON lines on the real stdout; everything else goes to stderr.

The agent's fd 1 is pointed at stderr as soon as it starts, so that a stray print() or a C library
writing to stdout cannot corrupt the event stream the controller parses.
"""
import json
import os
import sys


class Channel(object):
    def __init__(self):
        self._out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def emit(self, event, **fields):
        fields["event"] = event
        self._out.write(json.dumps(fields, sort_keys=True) + "\n")
        self._out.flush()

    def commands(self):
        while True:
            line = sys.stdin.readline()
            if not line:
                return
            line = line.strip()
            if line:
                yield json.loads(line)
