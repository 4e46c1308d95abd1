"""The farm agent: the small program that runs ON a device.

It must run on a Jetson Nano's own stack (JetPack 4.6: Python 3.6, torch 1.10, transformers 4.18),
so everything here is Python 3.6 syntax and stdlib at import time; torch and transformers are
imported only when a model is loaded. It talks JSON lines: commands on stdin, events on stdout,
anything for humans on stderr (see protocol.py).
"""
import hashlib
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def bundle_files():
    """The files that make up the agent, relative to the folder that holds the package."""
    found = []
    for folder, subfolders, names in os.walk(_HERE):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(("_", ".")))
        relative = os.path.relpath(folder, os.path.dirname(_HERE))
        found.extend(os.path.join(relative, n) for n in names if n.endswith(".py"))
    return sorted(found)


def content_hash():
    """A hash of the agent's source, recorded with every result and used to name uploads."""
    digest = hashlib.sha256()
    root = os.path.dirname(_HERE)
    for rel in bundle_files():
        digest.update(rel.encode())
        with open(os.path.join(root, rel), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]
