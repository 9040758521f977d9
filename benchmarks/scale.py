"""Cost per trial at scale: N near-instant trials through sweeper and through Ray Tune, side by side.

    python -m benchmarks.scale [--trials 100 1000 10000] [--method random bayes]
                               [--runners sweeper tune tunesqlite tunedefault] [--json OUT]
                               [--postgres URL --postgres-trials 2000] [--checkpoint-trials 1000]
                               [--driver-only] [--write]

Each trial is 2 epochs of 0.02 s (``benchmarks.fixed_trainer``), 2 at a time, on local Ray:

- sweeper: ``run_sweep`` (what ``sweeper launch`` runs), SQLite study, reused actors;
- Ray Tune + ``OptunaSearch`` (the same sampler), ``reuse_actors=True``; in memory (``tune``) and
  with its study in SQLite (``tunesqlite``, OptunaSearch's ``storage``: the recording sweeper does),
  both with the Ray Tune settings sweeper sets for itself (``sweeper.engine.ray_runtime.RAY_ENV``:
  no per-trial loggers, Tune's experiment state saved hourly; Ray started as sweeper starts it);
  and in memory with Tune's own defaults (``tunedefault``: Ray Tune as a user runs it);
- with ``--checkpoint-trials``, sweeper with a trainer that reports a checkpoint each epoch.

Every run is a new Python process with its own local Ray (:func:`in_child`).

A run's cost per trial is read from the times its trials ended (sweeper: the study's
``datetime_complete``; Ray Tune: a callback's clock at each trial's end), as the slope between the
10th and 50th percentile of trials ("early") and between the 75th and 97.5th ("late"). Flat cost
means late = early. ``random`` measures the orchestration itself; ``bayes`` adds TPE's ask, which
grows with the study by design, reported apart. On the largest sweeper study it also times
``sweeper show``, ``sweeper report`` and the closing summary (the progress display's end).

With ``--driver-only`` it also times the driver's own work without Ray on the largest ``--trials``
(:func:`driver_ms`): whether sweeper's part of the cost grows with the study, apart from Ray's.

With ``--postgres URL`` it also runs ``--postgres-trials`` trials on PostgreSQL, once with one
driver and once with two (``sweeper launch`` and, once the study exists, ``sweeper resume`` of it
beside it, 2 trials at a time each, sharing the budget).

Resumable: each run's end times are saved in ``benchmarks/scale.json`` (or ``--json OUT``: a
repeat of some runners into a file of its own) as it finishes, and a run already there is not run
again (:class:`benchmarks._results.RawLogs`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EPOCHS, EPOCH_S, CONCURRENCY = 2, 0.02, 2


def slopes(ends: list[float]) -> tuple[float, float]:
    """``(early, late)`` seconds per trial from the sorted end times ``ends`` (seconds): slopes
    between the 10th and 50th and between the 75th and 97.5th percentile of trials."""
    ends = sorted(ends)
    n = len(ends)

    def slope(lo: float, hi: float) -> float:
        i, j = int(lo * (n - 1)), int(hi * (n - 1))
        return (ends[j] - ends[i]) / max(1, j - i)

    return slope(0.10, 0.50), slope(0.75, 0.975)


def sweeper_ends(n: int, method: str, workdir: Path, url: str | None = None,
                 name: str | None = None, trainer: str = "FIXED") -> tuple[list[float], str, str]:
    """End times (seconds after the first) of ``n`` sweeper trials; the study's name and URL
    (a new SQLite file unless ``url`` is given). ``trainer``: ``FIXED_CHECKPOINTS`` reports a
    checkpoint each epoch."""
    import optuna

    from sweeper.engine.launch import run_sweep
    from sweeper.spec import validate

    name = name or f"scale-{method}-{n}-{trainer.lower()}"
    url = url or f"sqlite:///{workdir / f'{name}.db'}"
    run_sweep(validate(_spec(name, method, n, url, workdir, trainer)))
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    ends = sorted(t.datetime_complete.timestamp() for t in trials if t.datetime_complete is not None)
    return [e - ends[0] for e in ends], name, url


def _tune_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    for epoch in range(1, EPOCHS + 1):
        time.sleep(config["epoch_s"])
        tune.report({"val_accuracy": config["x"] * epoch / EPOCHS, "epoch": epoch})


def in_child(call: str, workdir: Path, tune_defaults: bool = False) -> tuple[Any, float]:
    """The JSON value of ``call`` (an expression on this module, ``scale``) evaluated in a new
    Python process with its own local Ray (no run inherits another's process, Ray or memory), and
    that process's peak resident memory in MiB (``VmHWM`` of ``/proc/self/status``; not
    ``getrusage``'s ``ru_maxrss``, which on Linux also holds the parent's peak through the fork):
    the driver's, as it holds Tune's records of every trial and checkpoint; Ray's own processes
    are not counted.
    Its environment has sweeper's Ray Tune settings (:data:`sweeper.engine.ray_runtime.RAY_ENV`,
    which ``sweeper launch`` sets for itself), or with ``tune_defaults`` none of them: Ray Tune's
    own defaults."""
    import json

    from sweeper.engine.ray_runtime import RAY_ENV

    out = workdir / "child.json"
    code = ("import json; from pathlib import Path; from benchmarks import scale; "
            f"value = {call}; "
            "peak_mb = next(int(line.split()[1]) for line in open('/proc/self/status') "
            "if line.startswith('VmHWM:')) / 1024; "  # kB
            f"Path({str(out)!r}).write_text(json.dumps({{'value': value, 'peak_mb': peak_mb}}))")
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}
    if not tune_defaults:
        env.update(RAY_ENV)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=7200, stdout=subprocess.DEVNULL)
    got = json.loads(out.read_text())
    return got["value"], got["peak_mb"]


def tune_ends(n: int, method: str, workdir: Path, sqlite: bool = False) -> list[float]:
    """End times (seconds after the first) of ``n`` Ray Tune trials (OptunaSearch, random or TPE);
    with ``sqlite``, OptunaSearch's study is kept in a new SQLite file (its ``storage`` argument,
    Optuna's ``RDBStorage`` in WAL mode as sweeper's studies are), as sweeper keeps its own: asks,
    parameters, each result as an intermediate value, each end."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    ends: list[float] = []

    class Ends(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            ends.append(time.perf_counter())

    if os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS") == "1":  # sweeper's settings: Ray started as sweeper does
        from sweeper.engine.ray_runtime import init_ray

        init_ray(None)
    sampler = optuna.samplers.RandomSampler() if method == "random" else optuna.samplers.TPESampler()
    storage = None
    if sqlite:  # Optuna's own RDBStorage, with the SQLite settings sweeper's studies use (WAL, synchronous=NORMAL)
        from sweeper.study.storage import _use_wal

        storage = optuna.storages.RDBStorage(f"sqlite:///{workdir / f'tune-{method}-{n}.db'}",
                                             engine_kwargs={"connect_args": {"timeout": 30}})
        _use_wal(storage.engine)
    search = OptunaSearch(metric="val_accuracy", mode="max", sampler=sampler, storage=storage,
                          study_name=f"tune-{method}-{n}" if sqlite else None)
    tune.Tuner(_tune_trainable, param_space={"x": tune.uniform(0.0, 1.0), "epoch_s": EPOCH_S},
               tune_config=tune.TuneConfig(search_alg=search,
                                           num_samples=n, max_concurrent_trials=CONCURRENCY, reuse_actors=True),
               run_config=tune.RunConfig(storage_path=str(workdir / "tune"), name=f"tune-{method}-{n}", verbose=0,
                                         callbacks=[Ends()])).fit()
    return [e - ends[0] for e in ends]


def driver_ms(n: int, workdir: Path, window: int = 500) -> list[float]:
    """The driver's own ms per trial, without Ray, in windows of ``window`` trials: sweeper's
    searcher, scheduler and recorder on a SQLite study, driven through the calls Ray Tune makes
    (suggest, each epoch's result, the end), with no wait for a trial."""
    from benchmarks.simulate import _RayTrial
    from sweeper.engine.recorder import StudyRecorder
    from sweeper.engine.scheduler import make_scheduler
    from sweeper.engine.searcher import StudySearcher
    from sweeper.spec import validate
    from sweeper.study.coordination import take_lease
    from sweeper.study.storage import open_storage
    from sweeper.study.studies import create_study

    url = f"sqlite:///{workdir / f'driver-{n}.db'}"
    sweep = validate(_spec(f"driver-{n}", "random", n, url, workdir))
    storage = open_storage(url)
    study = create_study(sweep, CONCURRENCY, storage)
    searcher = StudySearcher(study, sweep, storage, take_lease(study))
    searcher.POLL_S = 0.0
    scheduler = make_scheduler(sweep)
    recorder = StudyRecorder(sweep, searcher, scheduler)
    out, started = [], time.perf_counter()
    for i in range(n):
        trial = _RayTrial(f"t{i}", searcher.suggest(f"t{i}"))  # type: ignore[arg-type]
        if scheduler is not None:
            scheduler.on_trial_add(None, trial)  # type: ignore[arg-type]
        recorder.on_trial_start(0, [], trial)  # type: ignore[arg-type]
        for epoch in range(1, EPOCHS + 1):
            trial.last_result = {"epoch": epoch, "val_accuracy": 0.5 * epoch / EPOCHS, "training_iteration": epoch}
            if scheduler is not None:
                scheduler.on_trial_result(None, trial, trial.last_result)  # type: ignore[arg-type]
            recorder.on_trial_result(0, [], trial, trial.last_result)  # type: ignore[arg-type]
        if scheduler is not None:
            scheduler.on_trial_complete(None, trial, trial.last_result)  # type: ignore[arg-type]
        recorder.on_trial_complete(0, [], trial)  # type: ignore[arg-type]
        if (i + 1) % window == 0:
            now = time.perf_counter()
            out.append(round((now - started) / window * 1000, 2))
            started = now
    storage.engine.dispose()
    return out


def _timed(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sweeper", *args], check=True, capture_output=True, timeout=3600)
    return time.perf_counter() - started


def readers(name: str, url: str, workdir: Path) -> dict[str, float]:
    """Seconds for ``sweeper show`` and ``sweeper report`` (new processes) and the closing summary
    (rendered here) on the study ``name``."""
    import optuna
    from rich.console import Console

    from sweeper.spec import validate
    from sweeper.study.studies import stored_spec
    from sweeper.views.progress import summary

    out = {"show": _timed("show", name, "--storage", url),
           "report": _timed("report", name, "--storage", url, "-o", str(workdir / "r.html"))}
    study = optuna.load_study(study_name=name, storage=url)
    started = time.perf_counter()
    Console(file=open(os.devnull, "w"), width=100).print(summary(study, validate(stored_spec(url, name)), 0.0))  # noqa: SIM115
    out["closing summary"] = time.perf_counter() - started
    return out


def _spec(name: str, method: str, n: int, url: str, workdir: Path, trainer: str = "FIXED") -> dict[str, Any]:
    """The benchmark's sweep: ``n`` trials of the fixed trainer, ``CONCURRENCY`` at a time."""
    return {"name": name, "method": method, "run_cap": n, "epochs": EPOCHS, "max_concurrent_trials": CONCURRENCY,
            "trainer": f"benchmarks.fixed_trainer:{trainer}", "storage": url, "artifacts": str(workdir / "artifacts"),
            "keep_checkpoints": 0, "parameters": {"x": {"min": 0.0, "max": 1.0}, "epoch_s": {"value": EPOCH_S}}}


def two_drivers_ends(n: int, url: str, workdir: Path) -> list[float]:
    """End times of ``n`` trials run by two drivers of one study: ``sweeper launch`` and, once its
    study exists, ``sweeper resume`` beside it (each starts its own local Ray)."""
    import optuna

    name = f"scale-2drivers-{n}-{int(time.time())}"
    import yaml

    spec = workdir / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(_spec(name, "random", n, url, workdir)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = [sys.executable, "-m", "sweeper"]
    first = subprocess.Popen([*run, "launch", str(spec)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while name not in optuna.study.get_all_study_names(storage=url) and time.time() < deadline:
        time.sleep(0.5)
    second = subprocess.Popen([*run, "resume", name, "--storage", url], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    for proc in (first, second):
        _, err = proc.communicate(timeout=7200)
        if proc.returncode != 0:
            raise RuntimeError(f"a driver exited {proc.returncode}: {err.decode()[-2000:]}")
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    ends = sorted(t.datetime_complete.timestamp() for t in trials if t.datetime_complete is not None)
    return [e - ends[0] for e in ends]


NAMES = {"sweeper": "sweeper", "tune": "Ray Tune + OptunaSearch", "tunesqlite": "Ray Tune + OptunaSearch, SQLite study",
         "tunedefault": "Ray Tune + OptunaSearch, Tune's defaults", "sweeperckpt": "sweeper, a checkpoint each epoch",
         "sweeper-postgres": "sweeper, PostgreSQL", "sweeper-postgres-2drivers": "sweeper, PostgreSQL, two drivers"}
RUNNERS = ("sweeper", "tune", "tunesqlite", "tunedefault")


def _todo(args: argparse.Namespace, logs: Any) -> list[tuple[int, str]]:
    """The ``(trials, runner)`` runs not yet in ``logs``, in the order they run."""
    runners = [f"{who}-{method}" for method in args.method for who in args.runners]
    todo = list(logs.todo(runners, args.trials))
    if args.postgres:
        todo += [(args.postgres_trials, r) for r in ("sweeper-postgres", "sweeper-postgres-2drivers")
                 if f"{r}|{args.postgres_trials}" not in logs.raw]
    return todo + [(n, "sweeperckpt-random") for n in args.checkpoint_trials
                   if f"sweeperckpt-random|{n}" not in logs.raw]


def _run(runner: str, n: int, args: argparse.Namespace, workdir: Path, largest: int) -> dict[str, Any]:
    """One run, as a new process (:func:`in_child`): its trials' end times, and on the largest
    sweeper study the readers' times."""
    entry: dict[str, Any] = {}
    who, _, method = runner.partition("-")
    w = str(workdir)
    if runner == "sweeper-postgres-2drivers":
        entry["ends"] = two_drivers_ends(n, args.postgres, workdir)
    elif runner == "sweeper-postgres":
        name = f"scale-postgres-{n}-{int(time.time())}"
        entry["ends"], entry["peak_mb"] = in_child(f"scale.sweeper_ends({n}, 'random', Path({w!r}), "
                                                   f"url={args.postgres!r}, name={name!r})[0]", workdir)
    elif who in ("sweeper", "sweeperckpt"):
        trainer = "FIXED_CHECKPOINTS" if who == "sweeperckpt" else "FIXED"
        (entry["ends"], name, url), entry["peak_mb"] = in_child(f"scale.sweeper_ends({n}, {method!r}, "
                                                                f"Path({w!r}), trainer={trainer!r})", workdir)
        if n == largest and who == "sweeper":
            entry["readers"] = readers(name, url, workdir)
    else:
        entry["ends"], entry["peak_mb"] = in_child(f"scale.tune_ends({n}, {method!r}, Path({w!r}), "
                                                   f"sqlite={who == 'tunesqlite'})",
                                                   workdir, tune_defaults=who == "tunedefault")
    entry["ends"] = [round(e, 4) for e in entry["ends"]]
    return entry


def _table(raw: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """The runs' table rows, the readers' lines and the driver's line, from the raw end times."""
    lines = ["| runner | trials | ms per trial, early | late | late / early | whole run, s | driver peak, MiB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    reader_lines = []
    for key, entry in raw.items():
        if key == "_meta" or "ends" not in entry:
            continue
        runner, size = key.rsplit("|", 1)
        who, _, method = runner.partition("-") if not runner.startswith("sweeper-postgres") else (runner, "", "random")
        early, late = slopes(entry["ends"])
        lines.append(f"| {NAMES.get(who, who)} ({method}) | {size} | {early * 1000:.0f} | {late * 1000:.0f} | "
                     f"{late / early:.2f} | {entry['ends'][-1]:.0f} | "
                     + (f"{entry['peak_mb']:.0f} |" if "peak_mb" in entry else "not measured |"))
        if "readers" in entry:
            reader_lines.append(f"{NAMES.get(who, who)} ({method}), {size} trials: "
                                + ", ".join(f"{k} {v:.1f} s" for k, v in entry["readers"].items()))
    driver = [f"The driver's own work without Ray ({key}: searcher, scheduler and recorder, SQLite), ms per trial "
              f"in windows of 500 trials: {', '.join(f'{v:.1f}' for v in entry['ms_per_500'])}"
              for key, entry in raw.items() if key.startswith("driver|")]
    return lines, reader_lines, driver


def main() -> None:
    from benchmarks._results import RawLogs, machine, write_section

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--method", nargs="+", default=["random"], choices=["random", "bayes"])
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=RUNNERS)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("scale.json"),
                        help="the raw end times, read to resume and written as each run ends")
    parser.add_argument("--postgres", help="a PostgreSQL URL for the one- and two-driver runs")
    parser.add_argument("--postgres-trials", type=int, default=2000)
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    parser.add_argument("--checkpoint-trials", type=int, nargs="*", default=[],
                        help="also run sweeper with a checkpoint each epoch, at these sizes")
    parser.add_argument("--driver-only", action="store_true",
                        help="also time the driver's own work without Ray, on the largest --trials")
    args = parser.parse_args()
    if args.write and args.json.resolve() != Path(__file__).with_name("scale.json").resolve():
        raise SystemExit("--write: only the full run (benchmarks/scale.json) writes its section of RESULTS.md; "
                         "a repeat's --json is read and written up by hand")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logs = RawLogs(args.json, {"epochs": EPOCHS, "epoch_s": EPOCH_S, "concurrency": CONCURRENCY})
    largest = max(args.trials)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.driver_only and f"driver|{largest}" not in logs.raw:
            logs.save("driver", largest, {"ms_per_500": driver_ms(largest, workdir)})
        for n, runner in _todo(args, logs):
            print(f"{runner}, {n} trials ...", flush=True)
            logs.save(runner, n, _run(runner, n, args, workdir, largest))
    lines, reader_lines, driver = _table(logs.raw)
    print("\n".join(lines + reader_lines + driver), flush=True)
    if args.write:
        write_section(f"Cost per trial at scale ({time.strftime('%Y-%m-%d')})",
                      [f"Machine: {machine()}. Command: `python -m benchmarks.scale --trials "
                       f"{' '.join(map(str, args.trials))} --method {' '.join(args.method)}"
                       + (f" --postgres URL --postgres-trials {args.postgres_trials}" if args.postgres else "")
                       + (" --driver-only" if args.driver_only else "")
                       + (f" --runners {' '.join(args.runners)}" if args.runners != list(RUNNERS) else "")
                       + (f" --checkpoint-trials {' '.join(map(str, args.checkpoint_trials))}"
                          if args.checkpoint_trials else "")
                       + f"`. Trials of {EPOCHS} epochs of {EPOCH_S} s, {CONCURRENCY} at a time per driver; ms per "
                       "trial from the trials' end times (early: between the 10th and 50th percentile of trials; "
                       "late: between the 75th and 97.5th); whole run: first to last trial end.",
                       "", *lines, "", "Readers on the largest study: " + "; ".join(reader_lines) + ".",
                       *(["", *driver] if driver else [])])


if __name__ == "__main__":
    main()
