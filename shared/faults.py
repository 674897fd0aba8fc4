"""Named phases a job passes, for fault-injection tests (``tests/test_faults_*.py``).

A job calls :func:`phase` at the points where a crash is most likely to leave something
half-done (a model directory written but not registered, a version registered but not
gated, ...). With ``CTR_PHASE_LOG`` set, each phase reached is appended to that file
(flushed, so a harness that kills the process at a random time knows the last phase it
reached); with ``CTR_KILL_AT`` set to a phase name (``fnmatch`` pattern), the process
kills itself with SIGKILL on reaching it: no ``finally`` block, no atexit handler runs,
exactly as when the machine or the scheduler kills it. Unset, a phase costs one lookup.
"""

from __future__ import annotations

import fnmatch
import os
import signal

KILL_AT = "CTR_KILL_AT"
PHASE_LOG = "CTR_PHASE_LOG"


def phase(name: str) -> None:
    """Record that the job reached ``name``; die here if told to."""
    log = os.environ.get(PHASE_LOG)
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(name + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    target = os.environ.get(KILL_AT)
    if target and fnmatch.fnmatchcase(name, target):
        os.kill(os.getpid(), signal.SIGKILL)
