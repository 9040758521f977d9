"""W&B programs as trials: a sweep's ``program:`` run as each trial's process, as the W&B agent runs it.

The command is W&B's default (``${env} ${interpreter} ${program} ${args}``) or the spec's own
``command``, with the W&B agent's macros (its ``wandb_agent.py`` and
``sdk/launch/sweeps/utils.py``): ``${env}`` is ``/usr/bin/env``, ``${interpreter}`` the Python that
runs sweeper (the agent writes ``python``), ``${program}`` the program, ``${args}``
``--name=value`` per parameter, ``${args_no_hyphens}`` ``name=value``,
``${args_no_boolean_flags}`` ``--name`` for true and nothing for false, ``${args_no_equals}``
``--name value``, ``${args_json}`` the parameters as JSON, ``${args_json_file}`` a file holding
that JSON, ``${args_append_hydra}`` ``+name=value``, ``${args_override_hydra}`` ``++name=value``;
``${envvar:NAME}`` is the variable's value (its name when unset), also inside a word; any other
whole-word macro is dropped. Values are written as Python's ``str`` writes them (``True``,
``[32, 64]``, nested parameters as a dict), as the agent does.

The environment is the agent's: ``WANDB_SWEEP_ID`` (the study), ``WANDB_RUN_ID``, and
``WANDB_SWEEP_PARAM_PATH`` naming a file of the parameters in W&B's config format, so that
``wandb.init()`` fills ``wandb.config``. W&B is made to send nothing (``WANDB_MODE=disabled``)
unless the environment sets ``WANDB_MODE=online``; the runs are then grouped by the study name.

Metrics: every ``wandb.log`` call reaches the trial as it happens, through a ``sitecustomize``
that sweeper puts first on the program's ``PYTHONPATH`` (``sweeper/trial/_wandb_site``; it runs any
other ``sitecustomize`` after it) and that records each call's numbers, one JSON line each, in a
file the trial reads. A program that does not use wandb may print ``name=value`` lines on its
standard output instead (as Katib's stdout collector reads them); a program that imports wandb
reports through ``wandb.log`` alone, so that printing its metrics as well counts nothing twice.
The trial's step (ASHA's time) is the number of times the sweep's metric was logged, W&B
hyperband's iteration count.

A zero-argument function (``trainer: train:main``, the ``wandb.agent(sweep_id, function=main)``
style) runs in the trial's worker with the same environment: ``wandb.init()`` inside it gets the
trial's config, and each ``wandb.log`` reports to the trial (:func:`fit_function`).

Ends: exit 0 → COMPLETE, valued at the metric's last logged value; ASHA's stop → the program's
whole process group gets SIGTERM, then SIGKILL after :data:`sweeper.trial.processes.KILL_GRACE_S`, and the
trial is PRUNED; another exit code or a signal → FAIL with the last line of its standard error;
running longer than the spec's ``trial_timeout`` → stopped the same way, FAIL with that reason.
The program runs under a subreaper launcher in its own process group that dies with its trial's
worker (:mod:`sweeper.trial.processes`), so a killed driver, Ctrl-C, a lost worker, or a program that
forks and exits leaves no process of it running. It gets only part of the worker's environment
(:func:`sweeper.trial.processes.program_env`: not Ray's or sweeper's variables). Its output is kept
under ``artifacts``, capped (:data:`sweeper.trial.processes.LOG_CAP_BYTES`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sweeper.trial.processes import LOG_CAP_BYTES, CappedLog, FileFollower, Lines, exited, program_env, start, stop
from trainers.base import Report, TrainConfig, Trainer

DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")
ENVVAR_MACRO = re.compile(r"\$\{envvar\:([A-Z0-9_]*)\}")
POLL_S = 0.1
METRICS_ENV = "SWEEPER_METRICS_FILE"
METRICS_CAP_ENV = "SWEEPER_METRICS_CAP"  # bytes of the metrics file kept (the hook rotates it)
_STDOUT_METRIC = re.compile(r"^\s*([A-Za-z_][\w./-]*)\s*=\s*([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+|nan|inf))\s*$")
SITE_DIR = Path(__file__).resolve().parent / "_wandb_site"


class ProgramFailed(RuntimeError):
    """The program ended with a non-zero exit code or a signal sweeper did not send."""


def macro_values(params: Mapping[str, Any]) -> dict[str, list[str]]:
    """The argument macros of the W&B agent for these parameters, each as a list of words."""
    args, no_hyphens, no_booleans, no_equals, append_hydra, override_hydra = [], [], [], [], [], []
    for name, value in params.items():
        flag = f"{name}={value}"
        args.append("--" + flag)
        no_hyphens.append(flag)
        no_equals += [f"--{name}", str(value)]
        append_hydra.append("+" + flag)
        override_hydra.append("++" + flag)
        if isinstance(value, bool):
            if value:
                no_booleans.append("--" + name)
        else:
            no_booleans.append("--" + flag)
    return {"args": args, "args_no_hyphens": no_hyphens, "args_no_boolean_flags": no_booleans,
            "args_no_equals": no_equals, "args_json": [json.dumps(dict(params))],
            "args_append_hydra": append_hydra, "args_override_hydra": override_hydra}


def command_line(program: str, command: Sequence[str] | None, params: Mapping[str, Any],
                 json_file: str, environ: Mapping[str, str]) -> list[str]:
    """The words the W&B agent would run for ``program`` with ``params`` (see the module docstring)."""
    values = {**macro_values(params), "env": ["/usr/bin/env"], "interpreter": [sys.executable],
              "program": [program], "args_json_file": [json_file]}
    words: list[str] = []
    for chunk in command or DEFAULT_COMMAND:
        word = ENVVAR_MACRO.sub(lambda m: environ.get(m.group(1), m.group(1)), str(chunk))
        if word.startswith("${") and word.endswith("}"):
            words += values.get(word[2:-1], [])
        else:
            words.append(word)
    return words


def _wandb_config_file(path: Path, params: Mapping[str, Any]) -> None:
    """The parameters in W&B's config-file format (``wandb_version: 1``, then ``name: {value: v}``)."""
    import yaml

    body = yaml.safe_dump({k: {"value": v} for k, v in params.items()}, default_flow_style=False, sort_keys=False)
    path.write_text("wandb_version: 1\n\n" + body if params else "wandb_version: 1\n")


def _numbers(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a ``wandb.log`` dict, nested dicts flattened with '/' (W&B's display names)."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_numbers(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _last_line(tail: bytes) -> str:
    """The last non-empty line of the end of a standard error (a ``\\r`` ends a line too)."""
    lines = [ln.strip() for ln in re.split(r"[\r\n]", tail.decode("utf-8", "replace")) if ln.strip()]
    return lines[-1] if lines else "(nothing on its standard error)"


def _wandb_env(spec: Mapping[str, Any], params: Mapping[str, Any], stem: Path) -> dict[str, str]:
    """The W&B agent's variables for one run (its parameter file written next to ``stem``)."""
    config_file = Path(f"{stem}.config.yaml")
    _wandb_config_file(config_file, params)
    online = os.environ.get("WANDB_MODE", "").lower() == "online"
    env = {"WANDB_SWEEP_ID": str(spec["study"]), "WANDB_RUN_ID": str(spec["run_id"]),
           "WANDB_SWEEP_PARAM_PATH": str(config_file), "WANDB_MODE": "online" if online else "disabled",
           "WANDB_SILENT": os.environ.get("WANDB_SILENT", "true")}
    if online:
        env["WANDB_RUN_GROUP"] = os.environ.get("WANDB_RUN_GROUP", str(spec["study"]))
    return env


class _Steps:
    """Turns logged numbers into the trial's reports: one per logging of the sweep's metric."""

    def __init__(self, metric: str, report: Report):
        self.metric, self.report = metric, report
        self.step = 0
        self.row: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def logged(self, numbers: Mapping[str, float]) -> None:
        self.row.update(numbers)
        if self.metric in numbers:
            self.step += 1
            self.last, self.row = dict(self.row), {}
            self.report(self.step, self.last)

    def ended(self, name: str, bound: int) -> dict[str, float]:
        """After a clean end: the last logged numbers (reported again as complete when it ended before
        ``bound`` steps, like a trainer's own early stopping).

        Raises:
            ProgramFailed: the metric was never logged.
        """
        if self.step == 0:
            raise ProgramFailed(f"{name} exited 0 without logging {self.metric}")
        if self.step < bound:
            self.report(self.step, {**self.last, "early_stopped": 1.0})
        return self.last


def fit_function(function: Any, config: TrainConfig, report: Report) -> dict[str, float]:
    """Run a zero-argument W&B function in this process as the agent's ``function=`` runs it.

    The W&B agent's variables are set while it runs (and restored after), wandb's state is reset
    before it (``wandb.teardown()``, as the agent does), and ``wandb.log`` reports to the trial.

    Raises:
        ProgramFailed: it returned without logging the metric. Its own errors propagate (the
            trial is FAIL with their last line).
    """
    import wandb
    from wandb.sdk import wandb_run

    spec = config.program
    assert spec is not None
    logs = Path(spec["logs"])
    logs.mkdir(parents=True, exist_ok=True)
    steps = _Steps(str(spec["metric"]), report)
    saved = {k: os.environ.get(k) for k in ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH",
                                             "WANDB_MODE", "WANDB_SILENT", "WANDB_RUN_GROUP")}
    os.environ.update(_wandb_env(spec, dict(config.params), logs / str(spec["run_id"])))
    classes: list[type] = [wandb_run.Run]
    with contextlib.suppress(ImportError):
        from wandb.sdk.lib import noop_run

        classes.append(noop_run.NoopRun)
    originals = {cls: cls.__dict__["log"] for cls in classes if "log" in cls.__dict__}

    def following(original: Any) -> Any:
        def log(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
            out = original(self, data, *args, **kwargs)
            if isinstance(data, Mapping):
                steps.logged(_numbers(data))
            return out
        return log

    wandb.teardown()
    for cls, original in originals.items():
        cls.log = following(original)  # type: ignore[attr-defined]
    try:
        function()
        if wandb.run is not None:
            wandb.run.finish()
        return steps.ended(str(spec["function"]), int(config.epochs))
    finally:
        for cls, original in originals.items():
            cls.log = original  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            wandb.teardown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fit(config: TrainConfig, report: Report) -> dict[str, float]:
    """Run the trial's program (``config.program``) and report each logging of the sweep's metric.

    ``config.program`` holds ``program``, ``command`` (or ``None``), ``workdir`` (where it runs),
    ``metric``, ``logs`` (a folder for its output), ``study`` and ``run_id``; ``config.params`` are
    its W&B parameters (nested ones nested). Each report's epoch is the number of times the metric
    was logged so far; it carries every number logged since the last one.

    Returns:
        the numbers of the last logging of the metric.

    Raises:
        ProgramFailed: the program exited non-zero or was killed by a signal sweeper did not send
            (the message ends with the last line of its standard error), or exited 0 without
            logging the metric.
    """
    spec = config.program
    if spec is None:
        raise ValueError("the program trainer needs config.program (a sweep spec's `program:`)")
    if spec.get("function"):
        from trainers import get_trainer

        return fit_function(get_trainer(str(spec["function"])).fit, config, report)
    logs = Path(spec["logs"])
    logs.mkdir(parents=True, exist_ok=True)
    run_id = str(spec["run_id"])
    stem = logs / run_id
    params = dict(config.params)
    json_file = Path(f"{stem}.args.json")
    json_file.write_text(json.dumps(params))
    metrics_file = Path(f"{stem}.metrics.jsonl")
    for stale in (metrics_file, Path(f"{metrics_file}.1")):
        stale.unlink(missing_ok=True)
    env = {**program_env(os.environ, spec.get("command") or ()), **_wandb_env(spec, params, stem),
           METRICS_ENV: str(metrics_file), METRICS_CAP_ENV: str(LOG_CAP_BYTES),
           "PYTHONPATH": os.pathsep.join([str(SITE_DIR), str(spec["workdir"]),
                                          *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}
    words = command_line(str(spec["program"]), spec.get("command"), params, str(json_file), {**os.environ, **env})
    timeout = float(spec["trial_timeout"]) if spec.get("trial_timeout") else None
    steps = _Steps(str(spec["metric"]), report)
    code, timed_out, tail = _run(words, str(spec["workdir"]), env, stem, steps, timeout)
    if timed_out:
        raise ProgramFailed(f"{spec['program']} ran longer than trial_timeout ({timeout:g} s) and was "
                            f"stopped: {_last_line(tail)}")
    if code != 0:
        how = f"exit code {code}" if code > 0 else f"signal {signal.Signals(-code).name}"
        raise ProgramFailed(f"{spec['program']} ended with {how}: {_last_line(tail)}")
    return steps.ended(str(spec["program"]), int(config.epochs))


def _run(words: list[str], workdir: str, env: Mapping[str, str], stem: Path, steps: _Steps,
         timeout: float | None) -> tuple[int, bool, bytes]:
    """Run the program to its end (or ``timeout`` seconds), its output capped into ``stem``'s
    ``.out`` and ``.err``, its metrics reported through ``steps``; then stop its whole group.

    Returns:
        its exit code (minus the signal that ended it), whether it ran past ``timeout``, and the
        end of its standard error.
    """
    import selectors

    metrics = FileFollower(Path(env[METRICS_ENV]))
    printed = Lines(carriage=True)
    logs = {"out": CappedLog(Path(f"{stem}.out")), "err": CappedLog(Path(f"{stem}.err"))}
    tail = b""
    process = start(words, workdir, env)
    selector = selectors.DefaultSelector()
    assert process.stdout is not None and process.stderr is not None
    selector.register(process.stdout, selectors.EVENT_READ, "out")
    selector.register(process.stderr, selectors.EVENT_READ, "err")
    deadline = time.monotonic() + timeout if timeout else None
    ended_at: float | None = None
    timed_out = False
    try:
        while True:
            if ended_at is None and exited(process):
                ended_at = time.monotonic()
            lines: list[str] = []
            for key, _ in selector.select(timeout=POLL_S):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                logs[key.data].write(chunk)
                if key.data == "out":
                    lines += printed.feed(chunk)
                else:
                    tail = (tail + chunk)[-8192:]
            for line in metrics.read():  # after the exit too: what was logged last
                with contextlib.suppress(ValueError):
                    steps.logged(_numbers(json.loads(line)))
            # A program that imported wandb (the hook then made the file) reports through it alone.
            if not (metrics.seen or metrics.path.exists()):
                for line in lines:
                    if (match := _STDOUT_METRIC.match(line)) is not None:
                        steps.logged({match.group(1): float(match.group(2))})
            if ended_at is not None and (not selector.get_map() or time.monotonic() > ended_at + 2.0):
                break
            if deadline is not None and time.monotonic() > deadline:
                timed_out = True
                break
    finally:
        stop(process)  # ASHA's stop (report does not return), the timeout, or an error here
        selector.close()
        for stream in (process.stdout, process.stderr):
            stream.close()
        for log in logs.values():
            log.close()
        metrics.close()
    return int(process.returncode), timed_out, tail


def takes_no_arguments(function: Any) -> bool:
    """Whether ``function`` is called with no argument (a ``wandb.agent(function=...)`` function)."""
    import inspect

    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters)


TRAINER = Trainer(name="sweeper.trial.program:TRAINER", fit=fit, params=None, metrics=None)
