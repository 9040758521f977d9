"""The ``sweeper`` command line: a thin Typer shell over the library.

Every domain error is turned into one line on stderr and an exit code here, in
:func:`_handled`: 2 for bad input (nothing written), 1 when the sweep itself failed.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console

import sweeper
from sweeper.defaults import DEFAULT_STORAGE, STORAGE_ENV
from sweeper.errors import InputError, SweeperError

if TYPE_CHECKING:
    from sweeper.client import DriverJob
    from sweeper.spec import Sweep
    from sweeper.study.warm_start import WarmStart

app = typer.Typer(
    name="sweeper",
    help="Hyperparameter sweeps of image classifiers: W&B sweep YAML, Ray Tune + ASHA, Optuna studies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Logs and CI are not terminals: give tables room instead of rich's 80 columns there.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")

SpecPath = Annotated[Path, typer.Argument(help="The sweep spec (W&B sweep YAML plus sweeper's keys).",
                                          show_default=False)]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a key by its dotted path, validated like the file: --set data.root=/data/nature_12K "
                  "(repeatable).", show_default=False)]


def _handled(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn sweeper's errors into one line each on stderr and the exit code (2 input, 1 failure)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            for problem in e.problems:
                err.print(f"error: {problem}", markup=False)
            raise typer.Exit(e.exit_code) from None
        except SweeperError as e:
            err.print(f"error: {e}", markup=False)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted: the trials that were running are marked FAIL in the study")
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        out.print(f"sweeper {sweeper.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """sweeper: run a sweep from one YAML, on Ray Tune, recorded in an Optuna study."""


@app.command()
@_handled
def validate(spec: SpecPath, set_: SetOption = None) -> None:
    """Check a spec and print it resolved (defaults filled) with the search space's size."""
    import yaml

    from sweeper.spec import load_sweep
    from sweeper.study.storage import redact

    sweep = load_sweep(spec, set_ or [])
    for line in sweep.warnings:
        err.print(f"warning: {line}")
    resolved = sweep.stored()
    resolved["storage"] = redact(resolved["storage"])
    out.print(yaml.safe_dump(resolved, sort_keys=False).rstrip(), markup=False)
    size = sweep.space.size()
    out.print(f"# search space: {len(sweep.space.dimensions)} searched parameter(s), "
              + (f"{size} distinct configuration(s)" if size is not None else "continuous (infinite)"))
    out.print(f"# budget: {sweep.budget} finished trials; up to {sweep.max_epochs} epochs each; {sweep.scheduler_line}")


StudyArg = Annotated[str, typer.Argument(help="Name of the study.", show_default=False)]
StudyStorage = Annotated[str, typer.Option(help="SQLAlchemy URL of the study's storage.", envvar=STORAGE_ENV)]
StoreOption = Annotated[str, typer.Option(help="SQLAlchemy URL of the storage.", envvar=STORAGE_ENV)]
StorageOption = Annotated[str | None, typer.Option(
    help="SQLAlchemy URL of the study's storage (overrides `storage`; else SWEEPER_STORAGE).", show_default=False)]
AddressOption = Annotated[str | None, typer.Option(
    help="Ray cluster to join (`auto`, `HEAD_IP:6379`, or through Ray Client `ray://HEAD_IP:10001`; also "
         "RAY_ADDRESS); default: start Ray on this machine.",
    show_default=False)]


@app.command()
@_handled
def launch(
    spec: SpecPath,
    storage: StorageOption = None,
    study: Annotated[str | None, typer.Option(help="Study name (overrides `name`).", show_default=False)] = None,
    n_trials: Annotated[int | None, typer.Option("--n-trials", help="Finished trials to run (overrides `run_cap`).",
                                                 show_default=False)] = None,
    address: AddressOption = None,
    set_: SetOption = None,
    artifacts: Annotated[str | None, typer.Option(
        help="Folder for checkpoints and Ray Tune's files (overrides `artifacts`).", show_default=False)] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the study if it exists; its stored spec must match this file's.")] = False,
    warm_start: Annotated[str | None, typer.Option(
        "--warm-start", help="Start a new study with the finished trials of this earlier study that fit the "
        "space.", show_default=False)] = None,
    warm_storage: Annotated[str | None, typer.Option(
        "--warm-storage", help="The earlier study's storage URL (default: this sweep's).", show_default=False)] = None,
) -> None:
    """Run a sweep: validate the spec, create the study, run the trials on Ray Tune, print the best."""
    from sweeper.engine.ray_runtime import client_address
    from sweeper.spec import raw_spec, validate
    from sweeper.study.studies import continues_study
    from sweeper.study.warm_start import WarmStart, check

    raw = raw_spec(spec, set_ or [], storage=storage, study=study, n_trials=n_trials, artifacts=artifacts)
    if warm_storage is not None and warm_start is None:
        raise InputError(f"--warm-storage: {warm_storage!r} names where --warm-start's study is; give --warm-start")
    if client_address(address):
        if warm_start is not None:
            raise InputError("--warm-start: not yet through Ray Client; run the launch on the head (--address auto)")
        from sweeper.client import DriverJob

        # Ray Client: the spec's paths are the cluster's, so the driver validates it there.
        _run_on_cluster(DriverJob(raw=raw, resume=resume), address)
        return
    sweep = validate(raw)
    warm = WarmStart(warm_start, warm_storage) if warm_start is not None else None
    if warm is not None:
        check(sweep, warm)
    for line in sweep.warnings:
        err.print(f"warning: {line}")
    _run(sweep, address, resume=continues_study(sweep, resume), warm=warm)


@app.command()
@_handled
def resume(
    study: Annotated[str, typer.Argument(help="Name of the study to continue.", show_default=False)],
    storage: StudyStorage = DEFAULT_STORAGE,
    address: AddressOption = None,
) -> None:
    """Continue an interrupted study from the spec stored with it (no YAML needed)."""
    from sweeper.engine.ray_runtime import client_address
    from sweeper.spec import validate as validate_spec
    from sweeper.study.studies import stored_spec

    if client_address(address):
        from sweeper.client import DriverJob

        _run_on_cluster(DriverJob(study=study, storage=storage), address)
        return
    _run(validate_spec(stored_spec(storage, study)), address, resume=True)


def _run(sweep: Sweep, address: str | None, *, resume: bool, warm: WarmStart | None = None) -> None:
    """Run (or continue) the sweep here with live progress, then print the best trials (the
    Python API's :func:`sweeper.api.run`, on this command's console)."""
    from sweeper.api import run

    run(sweep, resume=resume, address=address, warm=warm, console=out)


def _run_on_cluster(job: DriverJob, address: str | None) -> None:
    """Run (or continue) the sweep through Ray Client, its driver on the cluster's head node."""
    from sweeper.client import run_through_client

    run_through_client(job, address, out, warn=lambda line: err.print(f"warning: {line}"))


@app.command()
@_handled
def report(
    study: StudyArg,
    storage: StudyStorage = DEFAULT_STORAGE,
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("report.html"),
) -> None:
    """Write a self-contained HTML report of a study (opens offline)."""
    import time

    from sweeper.study.studies import load_study
    from sweeper.views.report import compute, render

    started = time.perf_counter()
    data = compute(load_study(storage, study))
    output.write_text(render(data), encoding="utf-8")
    out.print(f"wrote {output} ({sum(data.counts.values())} trials) in {time.perf_counter() - started:.1f} s")


@app.command()
@_handled
def dashboard(
    study: Annotated[str | None, typer.Argument(help="Open this study's page (default: the list).",
                                                show_default=False)] = None,
    storage: StoreOption = DEFAULT_STORAGE,
    host: Annotated[str, typer.Option(help="Address to listen on; another than localhost exposes the study "
                                           "to your network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
) -> None:
    """Serve optuna-dashboard on the study's storage (safe to open while a sweep writes to it)."""
    from optuna_dashboard import run_server

    from sweeper.study.storage import open_storage, redact
    from sweeper.study.studies import load_study

    # The dashboard only reads; with SQLite in WAL mode it never blocks the sweep's writer.
    path = "/dashboard/"
    if study is not None:
        path += f"studies/{load_study(storage, study)._study_id}"
    backend = open_storage(storage, read_only=True)
    out.print(f"optuna-dashboard on {redact(storage)}: http://{host}:{port}{path}  (Ctrl-C stops it)")
    run_server(backend, host=host, port=port)


@app.command()
@_handled
def export(
    study: StudyArg,
    storage: StudyStorage = DEFAULT_STORAGE,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")] = Path("best.yaml"),
    format_: Annotated[str, typer.Option("--format", help="yaml or json.")] = "yaml",
    rank: Annotated[int, typer.Option(help="Export the K-th best COMPLETE trial.")] = 1,
    trial: Annotated[int | None, typer.Option(help="Export COMPLETE trial number N (any trial of a Pareto front).",
                                              show_default=False)] = None,
    pareto: Annotated[bool, typer.Option("--pareto", help="List the Pareto front's trials; write nothing.")] = False,
) -> None:
    """Write the best (or K-th best, or trial N's) training config, with its provenance; or list
    the Pareto front of a multi-objective study (``--pareto``)."""
    import json

    import yaml

    from sweeper.study.results import export_config, is_multi_objective, least_violating, pareto_front
    from sweeper.study.studies import load_study
    from sweeper.views.progress import front_table

    if format_ not in ("yaml", "json"):
        raise InputError(f"--format: {format_!r} must be yaml or json")
    if trial is not None and rank != 1:
        raise InputError(f"--rank: {rank} and --trial {trial} name two trials; give one")
    loaded = load_study(storage, study)
    if pareto:
        if not is_multi_objective(loaded):
            raise InputError(f"--pareto: study {study!r} has one objective; its best trials come by --rank")
        front = pareto_front(loaded)
        if not front and (nearest := least_violating(loaded)) is not None:
            raise InputError(f"--pareto: no COMPLETE trial of study {study!r} meets its constraints; the least "
                             f"violating is trial {nearest.number}")
        out.print(front_table(study, front))
        return
    config = export_config(loaded, storage, rank, trial)
    text = json.dumps(config, indent=2) + "\n" if format_ == "json" else yaml.safe_dump(config, sort_keys=False)
    output.write_text(text)
    p = config["provenance"]
    values = p.get("values") or {p["metric"]: p["value"]}
    shown = ", ".join(f"{k} = {v:.4g}" for k, v in values.items())
    chosen = f"rank {p['rank']}" if p["rank"] is not None else "chosen by number"
    out.print(f"wrote {output}: trial {p['trial']} ({chosen}) of {study}, {shown}")


@app.command()
@_handled
def train(
    config: Annotated[Path, typer.Argument(help="A training config (what `sweeper export` writes).",
                                           show_default=False)],
    epochs: Annotated[int | None, typer.Option(help="Epochs to train (overrides the file's).",
                                               show_default=False)] = None,
) -> None:
    """Train one config, without a sweep and without Ray, printing each epoch's metrics."""
    from sweeper.spec import load_train_config, read_yaml
    from sweeper.trial.replay import fit_scheduled

    raw = read_yaml(config)
    trainer, train_config = load_train_config(raw, epochs=epochs)
    schedule = raw.get("schedule")
    out.print(f"training {trainer.name} for {train_config.epochs} epochs on {train_config.data.dataset} "
              f"(seed {train_config.seed})" + (f", following its {len(schedule)}-step schedule" if schedule else ""))

    def report(epoch: int, metrics: Any, checkpoint: Any = None) -> None:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        out.print(f"epoch {epoch:>3}/{train_config.epochs}  {shown}")

    final = fit_scheduled(trainer, train_config, schedule, report)
    out.print("final: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items()))


@app.command()
@_handled
def retrain(
    source: Annotated[str, typer.Argument(help="A study name (its best trial) or a config file from `export`.",
                                          show_default=False)],
    storage: StudyStorage = DEFAULT_STORAGE,
    epochs: Annotated[int | None, typer.Option(help="Epochs to train (default: the config's).",
                                               show_default=False)] = None,
    seeds: Annotated[int, typer.Option(help="Train K times with seeds seed..seed+K-1.")] = 1,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write.")] = Path("retrained"),
    keep_val: Annotated[bool, typer.Option("--keep-val", help="Train on train alone, not train+val.")] = False,
    trial: Annotated[int | None, typer.Option(help="Retrain COMPLETE trial number N of the study (any trial "
                                              "of a Pareto front) rather than its best.", show_default=False)] = None,
) -> None:
    """Retrain the best config (or trial N's) on train+val, test it, and write the model, metrics and a page."""
    from sweeper.retrain import retrain as run_retrain
    from sweeper.spec import read_yaml
    from sweeper.study.results import export_config
    from sweeper.study.studies import load_study

    path = Path(source)
    from_file = path.suffix in (".yaml", ".yml", ".json") or path.is_file()
    if from_file and trial is not None:
        raise InputError(f"--trial: {trial} picks a trial of a study; {source} is a config file")
    config = read_yaml(path) if from_file else export_config(load_study(storage, source), storage, trial=trial)
    summary = run_retrain(config, output, epochs=epochs, seeds=seeds, keep_val=keep_val,
                          log=lambda line: out.print(line, markup=False))
    spread = f" ± {summary['accuracy_std']:.4f}" if seeds > 1 else ""
    out.print(f"{summary['evaluated_on']} accuracy {summary['accuracy_mean']:.4f}{spread}, macro-F1 "
              f"{summary['macro_f1_mean']:.4f}; wrote {output}/model.pt, config.yaml, metrics.json, report.html")


@app.command()
@_handled
def studies(
    storage: StoreOption = DEFAULT_STORAGE,
) -> None:
    """List the studies in a storage: method, trials by state, best value, last activity."""
    from rich.table import Table

    from sweeper.study.results import list_studies
    from sweeper.study.storage import redact

    rows = list_studies(storage)
    if not rows:
        out.print(f"no studies in {redact(storage)}")
        return
    table = Table()
    for col in ("study", "method", "complete", "pruned", "fail", "running", "best", "metric", "last activity (UTC)"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, r.method, *(str(r.counts.get(s, 0)) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")),
                      f"front {r.front}" if r.front is not None else "-" if r.best is None else f"{r.best:.4f}",
                      r.metric,
                      r.last_activity.strftime("%Y-%m-%d %H:%M:%S") if r.last_activity else "-")
    out.print(table)


@app.command()
@_handled
def show(
    study: StudyArg,
    storage: StudyStorage = DEFAULT_STORAGE,
    top: Annotated[int, typer.Option(help="How many best trials to list (twice as many of a Pareto front).")] = 10,
) -> None:
    """Print a study's stored spec and its best trials (with several objectives: its Pareto front)."""
    import yaml

    from sweeper.spec import validate as validate_spec
    from sweeper.study import record
    from sweeper.study.studies import load_study, stored_spec
    from sweeper.views.progress import summary

    loaded = load_study(storage, study)
    sweep = validate_spec(stored_spec(storage, study))  # before printing: a study not made by sweeper is one line
    out.print(yaml.safe_dump(record.stored_spec(loaded.user_attrs) or {}, sort_keys=False).rstrip(), markup=False)
    out.print(summary(loaded, sweep, None, top))


def main() -> None:
    """Console-script entry point."""
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.captureWarnings(True)
    sys.exit(app())
