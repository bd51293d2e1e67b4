"""JSON-lines events on the original stdout; everything else printed goes to stderr.

Libraries print to stdout (warnings, progress bars). The protocol needs stdout to carry
only events, so at startup the real stdout is kept for events and fd 1 is pointed at
stderr.
"""

import json
import math
import os
import sys
import time

from . import PROTOCOL_VERSION

_out = None
_sink = None  # tests running the recipe in-process collect events here
_only = None  # a data-parallel rank other than 0: the event types it may still emit (its own failure)


def set_sink(fn):
    """Send events to fn(event) instead of stdout (None: back to stdout)."""
    global _sink
    _sink = fn


def speak_only(main, failures):
    """Rank 0 of a data-parallel run speaks for the job; the other ranks report only `failures`."""
    global _only
    _only = None if main else frozenset(failures)


def claim_stdout():
    global _out
    if _out is None:
        sys.stdout.flush()
        _out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    return _out


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def emit(type_, **fields):
    event = {"v": PROTOCOL_VERSION, "type": type_, "time": time.time(), **fields}
    if _only is not None and type_ not in _only:
        return event
    if _sink is not None:
        _sink(json.loads(json.dumps(_clean(event))))
        return event
    out = _out if _out is not None else sys.stdout
    out.write(json.dumps(_clean(event), separators=(",", ":")) + "\n")
    out.flush()
    return event


def log(message, level="info"):
    emit("log", level=level, message=str(message))
