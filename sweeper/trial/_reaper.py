"""The launcher of a program trial: a tiny stdlib-only process between the Ray worker and the program.

Run as ``python -I -S _reaper.py GRACE_S PARENT_PID -- WORD...`` (see :mod:`sweeper.trial.processes`),
in its own process group, with the program's environment, folder and standard streams. It starts
itself again (``--inner``: a Ray worker that exits SIGKILLs its direct children, so the outer
launcher may die so; it forwards SIGTERM, SIGINT and SIGHUP to the inner one, whose parent-death
signal covers its being killed). The inner launcher

- asks Linux to send it SIGTERM when the worker that started it dies (``PR_SET_PDEATHSIG``; it
  checks its parent is still ``PARENT_PID`` after asking, so a worker that died first is seen);
- makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``): every descendant of the program
  that loses its parent (daemons, double forks, a new session) becomes its child, not init's;
- unblocks every signal (a blocked mask is inherited from the worker's thread through fork and
  exec: SIGTERM would never arrive);
- runs the program (``subprocess.Popen``: fork and exec, nothing in between);
- on SIGTERM, SIGINT or SIGHUP (the trial stopped, its worker gone), and also once the program
  itself has exited, sends SIGTERM to every descendant still alive, then SIGKILL to those left
  after ``GRACE_S`` seconds, and reaps them all;
- exits as the program did (its exit code, or the same signal), only when two scans of ``/proc``
  in a row find no descendant left, after a last SIGKILL to any process it ever saw as a
  descendant that still runs (same pid and start time).

Elsewhere than Linux (no ``prctl``, no ``/proc``) it degrades to signalling its process group.
Imports nothing of sweeper: it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
TICK_S = 0.05
_stop_requested = False


def _prctl(option: int, value: int) -> bool:
    """``prctl(option, value)``; False where there is none (not Linux) or it fails."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def proc_stats() -> dict[int, list[bytes]] | None:
    """Every process's ``/proc/PID/stat`` fields after the command name (``[state, ppid, pgrp,
    ...]``: field 3 of proc(5) first), by pid; ``None`` without ``/proc``. A process that ends
    meanwhile is left out."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    stats: dict[int, list[bytes]] = {}
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stats[int(entry)] = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
    return stats


def _descendants(root: int) -> dict[int, bytes] | None:
    """The live (not zombie) descendants of ``root`` from ``/proc``, each with its start time
    (``stat`` field 22, to tell a pid reused later); ``None`` without ``/proc``.

    A zombie is walked through, not returned: a child read while its parent lived, the parent
    then exiting before it is read (pids wrap, so a child may be listed first), is still found.
    """
    stats = proc_stats()
    if stats is None:
        return None
    parents: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        parents.setdefault(int(fields[1]), []).append(pid)
    found: dict[int, bytes] = {}
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            if stats[child][0] != b"Z":
                found[child] = stats[child][19]
            todo.append(child)
    return found


def _signal_all(sig: int, seen: dict[int, bytes]) -> int:
    """Send ``sig`` to every live descendant (or, without ``/proc``, to the process group), and
    add them to ``seen``; returns how many were alive (1 when that cannot be known)."""
    pids = _descendants(os.getpid())
    if pids is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(0), sig)
        return 1
    seen.update(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return len(pids)


def _kill_strays(seen: dict[int, bytes]) -> None:
    """SIGKILL each process once seen as a descendant that still runs (same pid, same start time):
    the last resort for one that left this tree all the same."""
    for pid, started in seen.items():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z" and fields[19] == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _requested(signum: int, _frame: object) -> None:
    global _stop_requested
    _stop_requested = True


def _exit_as(status: int) -> int:
    """Return exit code ``status``, or end this process by signal ``-status``."""
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


def main(argv: list[str]) -> int:
    """Start the subreaper (``--inner``) that runs the program ``argv[3:]`` (after ``--``), and
    forward the stop signals to it; returns the program's exit code (or ends by its signal).

    Two processes, because a Ray worker that exits SIGKILLs its direct children: this outer one
    may be killed so, and the inner one then learns it from its own parent-death signal and stops
    the program's whole tree before it exits.
    """
    if argv[0] == "--inner":
        return _inner(argv[1:])
    grace, parent = argv[0], int(argv[1])
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the worker died before prctl
        return 1
    inner = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), "--inner", grace,
                              str(os.getpid()), *argv[2:]])

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(inner.pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    return _exit_as(inner.wait())


def _inner(argv: list[str]) -> int:
    """The subreaper: run the program, then stop and reap every descendant (module docstring)."""
    grace, parent = float(argv[0]), int(argv[1])
    words = argv[3:]
    # A mask survives fork and exec, and a worker's threads may block signals: unblock them all,
    # for this process and the program it starts.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _requested)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the outer launcher died before prctl
        return 1
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    child = subprocess.Popen(words)
    status: int | None = None
    deadline: float | None = None
    seen: dict[int, bytes] = {}
    empty = 0  # scans in a row that found no descendant: two end the wait
    while True:
        while True:  # reap every child that ended: the program, and orphans handed to us
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            if pid == child.pid:
                status = os.waitstatus_to_exitcode(raw)
                child.returncode = status
        if deadline is None and (_stop_requested or status is not None):
            deadline = time.monotonic() + grace
            _signal_all(signal.SIGTERM, seen)
        if deadline is not None:
            alive = _descendants(os.getpid())
            if alive is not None:
                seen.update(alive)
            empty = empty + 1 if alive is not None and not alive else 0
            if empty >= 2 and status is not None:
                break
            if time.monotonic() >= deadline:
                _signal_all(signal.SIGKILL, seen)
                if alive is None:  # no /proc: the group was killed, this process with it
                    break
        time.sleep(TICK_S)
    _kill_strays(seen)
    return 1 if status is None else _exit_as(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
