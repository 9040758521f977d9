"""Program trials leave nothing behind (issue 22, part 3): the whole process tree of a program is
stopped (grandchildren that ignore SIGTERM or leave the process group too), whether its trial is
pruned, failed, timed out or its worker SIGKILLed; output is read once and capped; the program
gets only the environment it needs; ``trial_timeout`` is checked and enforced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.errors import InputError
from sweeper.spec import validate
from sweeper.trial.processes import CappedLog, FileFollower, Lines, program_env, start, stop
from sweeper.trial.program import ProgramFailed, fit
from tests.conftest import write_spec
from tests.test_resume import kill, trials_of, wait_until
from tests.test_resume import start as start_driver
from trainers.base import TrainConfig

# Forks two lingering descendants: one in the program's group that ignores SIGTERM, one in a new
# session (out of the group), each an orphan whose parent has exited. Their command line is the
# program's, so `pgrep -f MARKER` finds them.
LINGER = """
import os, signal, sys, time

def linger(new_session, ignore_term):
    if os.fork() == 0:
        if new_session:
            os.setsid()
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.fork() == 0:
            while True:
                time.sleep(0.5)
        os._exit(0)

linger(False, True)
linger(True, False)
"""


def _running(marker: str) -> list[str]:
    """The processes whose command line holds ``marker`` (this test's own, by a unique name)."""
    done = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True, check=False)
    return [line for line in done.stdout.splitlines() if "pgrep" not in line]


def _wait_gone(marker: str, timeout_s: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while _running(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _running(marker)


def _described(lines: list[str]) -> str:
    """What a leftover process is, for the failure message: its parent, group, session, state,
    start and trial (the run id in its environment)."""
    out = []
    for line in lines:
        pid = line.split()[0]
        ps = subprocess.run(["ps", "-o", "pid,ppid,pgid,sid,stat,lstart,args", "-p", pid],
                            capture_output=True, text=True, check=False).stdout
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            run = [e.decode() for e in env if e.startswith(b"WANDB_RUN_ID=")]
        except OSError:
            run = []
        out.append(f"{ps.strip()} {run}")
    return "\n".join(out)


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """One second between SIGTERM and SIGKILL (the launcher gets it as an argument)."""
    monkeypatch.setattr("sweeper.trial.processes.KILL_GRACE_S", 1.0)


def _program_config(tmp_path: Path, name: str, **extra: object) -> TrainConfig:
    return TrainConfig({"lr": 0.1}, epochs=3, program={
        "program": name, "command": None, "workdir": str(tmp_path), "metric": "score", "study": "s",
        "logs": str(tmp_path / "logs"), "run_id": "trial-0", **extra})


def test_a_program_that_exits_leaves_no_descendant(tmp_path: Path) -> None:
    """The program exits 0 at once, leaving an orphan that ignores SIGTERM in its group and one in
    a new session: both are gone when the trial ends (before: the group was not killed once its
    leader had exited, and the new session's orphan was init's)."""
    marker = f"linger_exit_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{marker}.py").write_text(LINGER + "print('score=1', flush=True)\n")
    final = fit(_program_config(tmp_path, f"{marker}.py"), lambda *a, **k: None)
    assert final["score"] == 1.0
    assert not _wait_gone(marker, 5.0)


def test_stopping_a_launched_program_kills_its_whole_tree(tmp_path: Path) -> None:
    """stop(): SIGTERM, then after the grace SIGKILL of what ignored it; nothing left."""
    marker = f"linger_stop_{uuid.uuid4().hex[:8]}"
    script = tmp_path / f"{marker}.py"
    script.write_text(LINGER + "signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n")
    process = start([sys.executable, str(script)], str(tmp_path), {"PATH": os.environ["PATH"]})
    wait_until(lambda: len(_running(marker)) >= 4, 20)  # launcher, program, two orphans
    began = time.monotonic()
    stop(process, grace_s=1.0)
    assert time.monotonic() - began < 10
    assert process.returncode is not None
    assert not _wait_gone(marker, 5.0)


def test_stopping_after_the_outer_launcher_was_killed_leaves_nothing(tmp_path: Path) -> None:
    """A Ray worker that exits SIGKILLs its direct children, the outer launcher among them, while
    the trial's thread is in stop(): the inner launcher, still stopping the program's tree, must
    not be killed with the group before it has killed the orphan in another session (before: a
    pruned trial's new-session grandchild was left running, 1 run in about 17)."""
    marker = f"linger_outer_{uuid.uuid4().hex[:8]}"
    script = tmp_path / f"{marker}.py"
    script.write_text(LINGER + "signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n")
    process = start([sys.executable, str(script)], str(tmp_path), {"PATH": os.environ["PATH"]})
    wait_until(lambda: len(_running(marker)) >= 5, 20)  # two launchers, the program, two orphans
    os.kill(process.pid, signal.SIGKILL)
    stop(process, grace_s=1.0)
    assert not _wait_gone(marker, 5.0), _described(_running(marker))


def test_output_is_read_once_split_on_carriage_returns_and_capped(tmp_path: Path) -> None:
    lines = Lines(carriage=True)
    bar = b"".join(b"\rprogress %d%%" % i for i in range(100))
    assert lines.feed(bar[:7]) == []
    got = lines.feed(bar[7:] + b"\nscore=0.5\n")
    assert got[-1] == "score=0.5" and got[-2] == "progress 99%" and len(got) == 101
    assert lines.feed(b"x" * 70000) == [] and lines.pending == b""  # an endless line is dropped
    log = CappedLog(tmp_path / "t.out", cap=1000)
    for i in range(300):
        log.write(b"line %05d\n" % i)
    log.close()
    kept = Path(f"{tmp_path / 't.out'}.1").read_bytes() + (tmp_path / "t.out").read_bytes()
    assert len(kept) <= 1000 and kept.endswith(b"line 00299\n") and b"line 00000" not in kept
    # a follower reads a file that is rotated under it, every line once, in order
    path = tmp_path / "m.jsonl"
    follower = FileFollower(path)
    seen: list[str] = []
    for i in range(50):
        with open(path, "a") as f:
            f.write(f"{i}\n")
        if i % 10 == 9:
            os.replace(path, f"{path}.1")
        if i % 3 == 0:
            seen += follower.read()
    seen += follower.read()
    assert seen == [str(i) for i in range(50)]


def test_a_program_gets_only_the_environment_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's and sweeper's variables and other secrets are not passed; the documented ones are,
    and a variable the command names as ${envvar:NAME}."""
    for name, value in {"RAY_AUTH_TOKEN": "ray-secret", "RAY_ADDRESS": "auto", "AWS_SECRET_ACCESS_KEY": "aws",
                        "SWEEPER_STORAGE": "postgresql+psycopg://u:pw@h/db", "LC_ALL": "C.UTF-8",
                        "CUDA_VISIBLE_DEVICES": "0", "WANDB_ENTITY": "me", "TMPDIR": str(tmp_path),
                        "DATA_HOME": "/data"}.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "env.py").write_text("import json, os, sys\njson.dump(dict(os.environ), open('env.json', 'w'))\n"
                                     "print(f'data={len(sys.argv)}', flush=True)\nprint('score=1', flush=True)\n")
    command = ["${env}", "${interpreter}", "${program}", "--data=${envvar:DATA_HOME}"]
    fit(_program_config(tmp_path, "env.py", command=command), lambda *a, **k: None)
    import json

    env = json.loads((tmp_path / "env.json").read_text())
    assert not [k for k in env if k.startswith(("RAY_", "SWEEPER_STORAGE", "AWS_"))], sorted(env)
    assert env["LC_ALL"] == "C.UTF-8" and env["CUDA_VISIBLE_DEVICES"] == "0" and env["WANDB_ENTITY"] == "me"
    assert env["PATH"] == os.environ["PATH"] and env["TMPDIR"] == str(tmp_path) and env["DATA_HOME"] == "/data"
    assert env["WANDB_MODE"] == "disabled" and env["SWEEPER_METRICS_FILE"].endswith("trial-0.metrics.jsonl")
    assert program_env({"RAY_X": "1", "HOME": "/h"}) == {"HOME": "/h"}


def test_trial_timeout_is_checked_and_stops_the_program(tmp_path: Path) -> None:
    base = {"method": "random", "program": "hang.py", "metric": {"name": "score"}, "epochs": 2,
            "workdir": str(tmp_path), "storage": f"sqlite:///{tmp_path / 's.db'}",
            "parameters": {"lr": {"values": [0.1]}}}
    (tmp_path / "hang.py").write_text("import time\nprint('score=1', flush=True)\ntime.sleep(600)\n")
    for bad, rule in ((".nan", "finite"), (".inf", "finite"), ("0", "greater than 0"), ("ten", "valid number")):
        with pytest.raises(InputError) as err:
            validate({**base, "trial_timeout": __import__("yaml").safe_load(bad)})
        assert len(err.value.problems) == 1 and str(err.value.problems[0]).startswith("trial_timeout: ")
        assert rule in str(err.value.problems[0])
    sweep = validate({**base, "trial_timeout": 1.5})
    config = sweep.trial_config({"lr": 0.1}, 0)
    assert config["program"]["trial_timeout"] == 1.5
    marker = f"hang_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{marker}.py").write_text(LINGER + "print('score=1', flush=True)\ntime.sleep(600)\n")
    reports: list[int] = []
    began = time.monotonic()
    with pytest.raises(ProgramFailed, match=r"ran longer than trial_timeout \(1.5 s\) and was stopped"):
        fit(_program_config(tmp_path, f"{marker}.py", trial_timeout=1.5), lambda e, m, c=None: reports.append(e))
    assert reports == [1] and time.monotonic() - began < 15
    assert not _wait_gone(marker, 5.0)


def test_the_wandb_hook_rotates_its_metrics_file_under_the_cap(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Every wandb.log call reaches the trial though the metrics file is rotated many times (each
    half of the cap takes longer to write than the follower's poll); the file and its .1 stay
    under the cap."""
    monkeypatch.setattr("sweeper.trial.program.LOG_CAP_BYTES", 4096)
    (tmp_path / "many.py").write_text("import wandb\nrun = wandb.init()\nfor e in range(1, 401):\n"
                                      "    wandb.log({'score': e, 'pad': 123456789.0})\n"
                                      "    __import__('time').sleep(0.005)\n")
    reports: list[float] = []
    config = TrainConfig({"lr": 0.1}, epochs=400, program={
        "program": "many.py", "command": None, "workdir": str(tmp_path), "metric": "score", "study": "s",
        "logs": str(tmp_path / "logs"), "run_id": "trial-0"})
    fit(config, lambda e, m, c=None: reports.append(m["score"]))
    assert reports == [float(e) for e in range(1, 401)]
    stem = tmp_path / "logs" / "trial-0.metrics.jsonl"
    assert Path(f"{stem}.1").exists() and stem.stat().st_size + Path(f"{stem}.1").stat().st_size <= 4096


HOSTILE = LINGER + """
n = int(os.environ["WANDB_RUN_ID"].split("-")[1])
if n == 1:
    sys.exit("cannot go on: " + "x" * 10)  # exit 1, its orphans alive
if n == 2:
    time.sleep(600)  # past trial_timeout
for epoch in range(1, 4):
    for i in range(100):  # a progress bar: 100 KB of \\r-separated updates, no newline
        sys.stdout.write(f"\\rprogress {i:3d}% " + "#" * 1000)
        sys.stdout.flush()
    sys.stderr.write("warning " * 2000 + "\\n")
    print(f"\\nscore={(10 if n == 0 else 1) * epoch}", flush=True)
    time.sleep(1.5 if n == 0 else 0.3)
"""


@pytest.mark.slow
def test_pruned_failed_timed_out_and_killed_program_trials_leave_nothing_behind(tmp_path: Path) -> None:
    """A real sweep (Ray, SQLite) of a program that forks lingering grandchildren (one ignores
    SIGTERM, one leaves the group) and prints \\r progress: trial 0's worker is SIGKILLed mid-run
    (retried, then COMPLETE), trial 1 exits 1 (FAIL), trial 2 hangs past trial_timeout (FAIL),
    later ones are PRUNED by ASHA. No process of it remains, every log stays under the cap, and
    the PRUNED trials' logs are deleted with their checkpoints."""
    marker = f"hostile_program_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{marker}.py").write_text(HOSTILE)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    spec = write_spec(tmp_path / "h.yaml", {
        "name": "hostile", "method": "random", "metric": {"name": "score", "goal": "maximize"},
        "program": f"{marker}.py", "run_cap": 3, "epochs": 3, "storage": url, "artifacts": str(tmp_path / "art"),
        "max_concurrent_trials": 1, "max_failed_trials": 3, "trial_timeout": 6,
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "parameters": {"lr": {"min": 0.1, "max": 0.2}}})
    log = tmp_path / "driver.log"
    cap_mb = 0.05
    proc = start_driver(["launch", str(spec)], tmp_path, log,
                        env={"SWEEPER_PROGRAM_LOG_MB": str(cap_mb), "SWEEPER_PROGRAM_KILL_GRACE_S": "1"})
    try:
        launcher = f"_reaper.py.*{marker}"
        # trial 0 has logged a step: SIGKILL its Ray worker (the launcher's parent)
        wait_until(lambda: bool(_running(launcher)) and bool(trials_of(url, "hostile"))
                   and bool(trials_of(url, "hostile")[0].intermediate_values), 120, proc, log)
        pid = int(next(line for line in _running(launcher) if "--inner" not in line).split()[0])
        worker = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(worker, signal.SIGKILL)
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            kill(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    left = _wait_gone(marker, 10.0)
    assert not left, _described(left)
    trials = {t.number: t for t in trials_of(url, "hostile")}
    assert trials[0].state == TrialState.COMPLETE and trials[0].user_attrs["worker_retries"] == 1
    assert trials[1].state == TrialState.FAIL
    assert "ended with exit code 1: cannot go on: xxxxxxxxxx" in trials[1].user_attrs["fail_reason"]
    assert trials[2].state == TrialState.FAIL
    assert "ran longer than trial_timeout (6 s)" in trials[2].user_attrs["fail_reason"]
    pruned = [t for t in trials.values() if t.state == TrialState.PRUNED]
    assert len(pruned) == 2 and all(len(t.intermediate_values) < 3 for t in pruned)
    logs = tmp_path / "art" / "hostile" / "programs"
    cap = int(cap_mb * 2**20)
    for n, trial in trials.items():
        if trial.state == TrialState.PRUNED:  # pruned with its checkpoints, once its group had gone
            assert not list(logs.glob(f"trial-{n}.*")), (n, sorted(logs.iterdir()))
            continue
        for kind in ("out", "err"):  # the best COMPLETE trial's and the FAIL trials' logs are kept
            sizes = [p.stat().st_size for p in logs.glob(f"trial-{n}.{kind}*")]
            assert sizes and sum(sizes) <= cap, (n, kind, sizes)
    assert (logs / "trial-0.out.1").exists()  # rotated: 300 KB written to a 52 KB cap
    assert optuna.load_study(study_name="hostile", storage=url).best_value == 30.0


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_python_trainer_past_trial_timeout_fails_at_its_next_report(tmp_path: Path) -> None:
    """trial_timeout with a Python trainer: stopped at the first report after the deadline, FAIL
    with the reason, and the failure budget ends the sweep (exit 1)."""
    from typer.testing import CliRunner

    from sweeper.cli import app

    url = f"sqlite:///{tmp_path / 't.db'}"
    spec = write_spec(tmp_path / "t.yaml", {
        "name": "timed", "method": "random", "trainer": "tests.fake_trainers:CURVE", "epochs": 6, "run_cap": 1,
        "max_failed_trials": 0, "trial_timeout": 1.5, "storage": url, "artifacts": str(tmp_path / "art"),
        "parameters": {"lr": {"value": 0.01}, "sleep_s": {"value": 0.6}}})
    result = CliRunner().invoke(app, ["launch", str(spec)])
    assert result.exit_code == 1, result.output
    [trial] = optuna.load_study(study_name="timed", storage=url).trials
    assert trial.state == TrialState.FAIL
    import re

    stopped = re.match(r"TimeoutError: trial_timeout: ran longer than 1.5 s \(stopped at epoch (\d)\)$",
                       trial.user_attrs["fail_reason"])
    assert stopped is not None and 2 <= int(stopped.group(1)) <= 4, trial.user_attrs["fail_reason"]
    assert sorted(trial.intermediate_values) == list(range(1, int(stopped.group(1))))  # epoch 6 never reached


def test_a_stray_once_seen_is_killed_but_not_a_reused_pid() -> None:
    """The launcher's last resort: a process once seen as a descendant that still runs is
    SIGKILLed at the end; a pid whose start time differs (reused since) is left alone."""
    from sweeper.trial import _reaper

    strays = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
    try:
        started = {p.pid: Path(f"/proc/{p.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19]
                   for p in strays}
        _reaper._kill_strays({strays[0].pid: started[strays[0].pid], strays[1].pid: b"0"})
        assert strays[0].wait(timeout=5) == -signal.SIGKILL
        time.sleep(0.3)
        assert strays[1].poll() is None
    finally:
        for p in strays:
            p.kill()
            p.wait()
