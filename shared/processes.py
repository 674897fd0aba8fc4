"""Who wrote a record of work in progress, and whether that process is gone.

A job that records "running" (a version registered but not gated, a scheduler attempt
started) names its process: host, pid and the process's start time (clock ticks since
boot, ``/proc/PID/stat`` field 22), which with the pid names one process even after the
pid is reused. The next run tells a record of a live process from one of a killed process
(:func:`gone`) and finishes or retries the latter's work.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def start_ticks(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), or None when none runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def this_process() -> tuple[str, int, str | None]:
    """(host, pid, start ticks) of this process."""
    pid = os.getpid()
    return socket.gethostname(), pid, start_ticks(pid)


def gone(host: str | None, pid: int | str | None, ticks: str | None = None) -> bool:
    """Whether the process (``host``, ``pid``, optionally its start ``ticks``) is known to be
    gone: it ran on this host and no process with that pid (and start time) runs. False when
    it cannot be told (another host, no pid)."""
    if host != socket.gethostname():
        return False
    try:
        number = int(pid or 0)
    except ValueError:
        return False
    if number <= 0:
        return False
    now = start_ticks(number)
    return now is None or (ticks is not None and now != ticks)
