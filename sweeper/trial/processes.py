"""A program trial's processes and files: started through a subreaper, stopped whole, logs capped.

:func:`start` runs the program's words through :mod:`sweeper.trial._reaper`, a tiny launcher exec'd in
its own process group (``process_group=0``, done by Python's fork helper: nothing runs between
fork and exec in the threaded Ray worker). The launcher asks for SIGTERM when the worker dies
(``PR_SET_PDEATHSIG``), is a child subreaper (``PR_SET_CHILD_SUBREAPER``) so that every
descendant of the program stays its descendant, and when the program exits or the trial is
stopped it SIGTERMs every descendant, SIGKILLs what is left after :data:`KILL_GRACE_S`, and
exits only once none is left. :func:`stop` signals the whole process group and then SIGKILLs it
whether or not its leader has exited (the leader is left unreaped until then, so its group id
cannot be reused).

The program gets only :func:`program_env`'s environment, and its output is kept capped
(:class:`CappedLog`, :data:`LOG_CAP_BYTES`). Linux-only features degrade gracefully elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from sweeper.trial._reaper import proc_stats

REAPER = Path(__file__).resolve().parent / "_reaper.py"
# Seconds between SIGTERM and SIGKILL when a trial is stopped (W&B's agent waits 30 s).
KILL_GRACE_S = float(os.environ.get("SWEEPER_PROGRAM_KILL_GRACE_S", "10"))
# The most bytes kept of each of a program's logs (.out, .err, .metrics.jsonl): the newest
# half in the file, the half before it in the file's ``.1``; older output is dropped.
LOG_CAP_BYTES = max(2048, int(float(os.environ.get("SWEEPER_PROGRAM_LOG_MB", "10")) * 2**20))
# The longest unterminated stdout line kept while it waits for its end (a metric line is short).
MAX_PENDING_LINE = 65536

# What a program's environment keeps of the worker's: these names, names starting with one of
# the prefixes, and any name its command reads as ${envvar:NAME}. Nothing else: not Ray's
# variables (RAY_AUTH_TOKEN), not sweeper's (SWEEPER_STORAGE), not other credentials.
PASSED_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "LANG", "LANGUAGE",
    "TMPDIR", "TEMP", "TMP", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONWARNINGS",
    "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_EXE", "CONDA_PYTHON_EXE", "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "NVIDIA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCH_HOME", "HF_HOME",
    "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
})
PASSED_PREFIXES = ("LC_", "WANDB_")
_ENVVAR = re.compile(r"\$\{envvar\:([A-Za-z0-9_]*)\}")


def program_env(environ: Mapping[str, str], command: Iterable[object] = ()) -> dict[str, str]:
    """The part of ``environ`` a program gets: :data:`PASSED_NAMES`, names starting with
    :data:`PASSED_PREFIXES`, and the names ``command`` reads through ``${envvar:NAME}``."""
    named = {m.group(1) for word in command for m in _ENVVAR.finditer(str(word))}
    return {k: v for k, v in environ.items()
            if k in PASSED_NAMES or k.startswith(PASSED_PREFIXES) or k in named}


def start(words: Sequence[str], cwd: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ``words`` through the subreaper launcher, in a new process group, standard output
    and error as pipes (the caller reads them).

    Raises:
        OSError: the launcher (this Python) cannot be started.
    """
    launcher = [sys.executable, "-I", "-S", str(REAPER), repr(KILL_GRACE_S), str(os.getpid()), "--", *words]
    return subprocess.Popen(launcher, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, process_group=0)


def exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether ``process`` has ended, without reaping it (its pid and group id stay reserved)."""
    if process.returncode is not None:
        return True
    if not hasattr(os, "waitid"):  # macOS: no waitid; poll() reaps (the group id may then be reused)
        return process.poll() is not None
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in process group ``pgid``, from ``/proc``;
    ``False`` where there is no ``/proc`` (the caller then kills the group at once)."""
    stats = proc_stats()
    return stats is not None and any(f[0] != b"Z" and int(f[2]) == pgid for f in stats.values())


def stop(process: subprocess.Popen[bytes], grace_s: float | None = None) -> None:
    """End the program's whole process group: SIGTERM (the launcher then stops every descendant,
    SIGKILL after ``grace_s`` seconds, default :data:`KILL_GRACE_S`), wait up to ``grace_s`` + 5 s
    for the group to empty, then SIGKILL it whether or not its leader has exited, and reap the
    launcher. Returns at once for a launcher already reaped.

    The wait is for the whole group, not its leader: when the outer launcher is killed (its Ray
    worker exiting SIGKILLs its children), the inner one is still stopping the program's tree,
    descendants outside the group included, and a SIGKILL to the group then would leave those.
    """
    if process.returncode is not None:
        return
    if not exited(process):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + (KILL_GRACE_S if grace_s is None else grace_s) + 5.0
    while (not exited(process) or _group_alive(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # the leader unreaped: its group id is still ours
    process.wait()


class CappedLog:
    """An append-only log that keeps its newest bytes: at most half of ``cap`` bytes in ``path``,
    the half before them in ``path.1`` (rotated as logrotate would), so never more than ``cap``."""

    def __init__(self, path: Path, cap: int = LOG_CAP_BYTES) -> None:
        self.path, self.half = path, max(1, cap // 2)
        for stale in (path, Path(f"{path}.1")):
            stale.unlink(missing_ok=True)
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.size = 0

    def write(self, data: bytes) -> None:
        """Append ``data`` (rotating first when the file would pass half the cap)."""
        while data:
            if self.size >= self.half:
                self.file.close()
                with contextlib.suppress(FileNotFoundError):  # pruned with its trial (the recorder)
                    os.replace(self.path, f"{self.path}.1")
                self.file, self.size = open(self.path, "wb"), 0  # noqa: SIM115
            part, data = data[:self.half - self.size], data[self.half - self.size:]
            self.file.write(part)
            self.size += len(part)
        self.file.flush()

    def close(self) -> None:
        """Close the file."""
        self.file.close()


class Lines:
    """Complete lines out of a stream read in chunks: each byte read once (no re-reading of an
    unterminated line), ``\\r`` ending a line as ``\\n`` does when ``carriage`` (progress bars), an
    unterminated line longer than :data:`MAX_PENDING_LINE` dropped, empty lines left out."""

    def __init__(self, carriage: bool) -> None:
        self.pending = b""
        self.split = re.compile(rb"\r\n|\r|\n" if carriage else rb"\n")

    def feed(self, chunk: bytes) -> list[str]:
        """The lines that ``chunk`` completes, decoded as UTF-8 (errors replaced)."""
        parts = self.split.split(self.pending + chunk)
        self.pending = parts.pop()
        if len(self.pending) > MAX_PENDING_LINE:
            self.pending = b""
        return [p.decode("utf-8", "replace") for p in parts if p]


class FileFollower:
    """New complete lines of a file another process appends to and rotates (``path`` renamed to
    ``path.1``, as :class:`CappedLog` and the wandb hook do): read through one open handle, each
    byte once, switching to the new file after reading the old one to its end. A writer that
    rotates twice between two reads (more than half its cap in :data:`sweeper.trial.program.POLL_S`)
    loses the lines of the ``.1`` it replaced: the cap wins."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO | None = None
        self.lines = Lines(carriage=False)
        self.seen = False

    def read(self) -> list[str]:
        """The lines completed since the last call (none while the file does not exist)."""
        if self.file is None:
            try:
                self.file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
            except FileNotFoundError:
                return []
            self.seen = True
        file = self.file
        out = self.lines.feed(file.read())
        try:
            rotated = os.stat(self.path).st_ino != os.fstat(file.fileno()).st_ino
        except FileNotFoundError:
            rotated = False  # renamed, the new one not yet written: read on from the old one
        if rotated:
            out += self.lines.feed(file.read())
            file.close()
            self.file = None
            out += self.read()
        return out

    def close(self) -> None:
        """Close the open handle, if any."""
        if self.file is not None:
            self.file.close()
            self.file = None
