"""Who wrote a record of work in progress, and whether that process is gone.

A job that records "running" (a version registered but not gated, a scheduler attempt
started) names its process: host (hostname and pid namespace), pid and the process's start
time (clock ticks since boot, ``/proc/PID/stat`` field 22), which with the pid names one
process even after the pid is reused. The next run tells a record of a live process from one
of a killed process (:func:`state`) and finishes or retries the latter's work; where it
cannot tell (another host or container, no ``/proc``), it leaves the record alone.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

GONE, ALIVE, UNKNOWN = "gone", "alive", "unknown"


def _stat(pid: int | str) -> bytes:
    return Path(f"/proc/{pid}/stat").read_bytes()


def start_ticks(pid: int | str) -> str:
    """The start time of process ``pid`` (clock ticks since boot); "" when it cannot be read."""
    try:
        return _stat(pid).rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError, ValueError):
        return ""


def host_id() -> str:
    """This host as a record names it: the hostname and the pid namespace (containers that
    share a hostname but not a process table must not judge each other's pids)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}" if namespace else socket.gethostname()


def this_process() -> tuple[str, int, str]:
    """(host, pid, start ticks) of this process."""
    pid = os.getpid()
    return host_id(), pid, start_ticks(pid)


def _signal_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def state(host: str | None, pid: int | str | None, ticks: str | None = None) -> str:
    """Whether the process (``host``, ``pid``, optionally its start ``ticks``) is ``gone``,
    ``alive`` or ``unknown`` (another host or container, no pid)."""
    here = host_id()
    same_host = host == here or ("/" not in (host or "") and host == here.split("/")[0])
    try:
        number = int(pid or 0)
    except ValueError:
        return UNKNOWN
    if not same_host or number <= 0:
        return UNKNOWN
    try:
        stat = _stat(number)
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return GONE  # /proc lists every process of this namespace: no entry, no process
        return ALIVE if _signal_alive(number) else GONE
    except OSError:  # hidden or unreadable: ask the kernel
        return ALIVE if _signal_alive(number) else GONE
    if ticks:
        try:
            now = stat.rsplit(b")", 1)[1].split()[19].decode()
        except (IndexError, ValueError):
            return ALIVE
        return ALIVE if now == ticks else GONE  # another start time: the pid was reused
    return ALIVE


def gone(host: str | None, pid: int | str | None, ticks: str | None = None) -> bool:
    """Whether the process is known to be gone (see :func:`state`)."""
    return state(host, pid, ticks) == GONE


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and all its live descendants (Linux ``/proc``);
    descendants that exited and were reaped count through their parent's cutime/cstime.
    What the benchmarks charge a job whose work runs in a JVM and its Python workers."""
    tck = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = _stat(entry).rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            # fields[1] ppid; [11] utime, [12] stime, [13] cutime, [14] cstime (clock ticks)
            stats[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / tck)
    children: dict[int, list[int]] = {}
    for child, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(child)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, (0, 0.0))[1]
        todo += children.get(p, [])
    return total
