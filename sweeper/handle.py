"""A sweep as a Python object: a study's trials as a pandas DataFrame, its best trials, its
export, retrain and report, and the report's figures one by one as Plotly figures.

:class:`Sweep` is what :func:`sweeper.launch`, :func:`sweeper.agent` and :func:`sweeper.load`
return. It holds the study's name and storage and reads the study afresh at each access, so a
handle kept in a notebook sees the trials another process (or the next ``agent`` call) adds.
No Ray here: reading a sweep never starts it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper.errors import InputError

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    import plotly.graph_objects as go


class Sweep:
    """A study made by sweeper, read as data and plots.

    Attributes:
        name: the study's name (the ``sweep_id`` of :func:`sweeper.sweep`).
        storage: the SQLAlchemy URL of its storage.
        plot: the report's figures, one method each (:class:`Plots`).
    """

    def __init__(self, name: str, storage: str):
        self.name = name
        self.storage = storage
        self.plot = Plots(self)

    @property
    def study(self) -> optuna.Study:
        """The Optuna study, opened read-only (an SQLite file is not written to).

        Raises:
            InputError: the study is not in the storage, or the storage does not answer.
        """
        from sweeper.study.studies import load_study

        return load_study(self.storage, self.name)

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """``(metric, goal)`` per objective, in the study's order (``goal`` ``maximize`` or ``minimize``)."""
        from sweeper.study import record

        study = self.study
        return record.stored_objectives(study.user_attrs) or [
            (f"objective{i}", d.name.lower()) for i, d in enumerate(study.directions)]

    @property
    def best(self) -> dict[str, Any] | None:
        """The best COMPLETE trial: ``{"trial": number, "values": {metric: value}, "epochs_run": n,
        "params": {name: value}}`` (the parameters the trainer got, defaults included); ``None``
        before any trial completed.

        Raises:
            InputError: the study has several objectives (no single best: see :attr:`pareto`).
        """
        from sweeper.study.results import is_multi_objective, pareto_front

        study = self.study
        if is_multi_objective(study):
            raise InputError(f"best: study {self.name!r} has {len(study.directions)} objectives and no single "
                             "best trial; its Pareto front is .pareto")
        front = pareto_front(study)
        return front[0] if front else None

    @property
    def pareto(self) -> list[dict[str, Any]]:
        """The Pareto front of the COMPLETE trials, as :attr:`best`'s dicts, best first by the first
        objective (with one objective: every COMPLETE trial, best first)."""
        from sweeper.study.results import pareto_front

        return pareto_front(self.study)

    @property
    def trials(self) -> pd.DataFrame:
        """Every trial, one row each, indexed by trial number.

        Columns: ``state`` (COMPLETE, PRUNED, FAIL, RUNNING, WAITING); one column per objective,
        named by its metric (the final value: a PRUNED trial's last epoch's, as Optuna records it;
        NaN for a trial without one); ``epochs`` (epochs
        trained); ``curve`` (the first objective per epoch, a list of floats, epoch 1 first);
        ``params`` (the sampled parameters, a dict) and one ``params_<name>`` column per parameter
        (as Optuna's ``trials_dataframe`` names them); ``reason`` (why it failed, else
        ``None``); ``duration_s`` (seconds from start to end; NaN while running).
        """
        import pandas as pd

        from sweeper.study import record

        names = [name for name, _ in self.objectives]
        rows = []
        for t in self.study.get_trials(deepcopy=False):
            values = list(t.values) if t.values is not None else []
            # A multi-objective study holds no intermediate values: the first objective's curve.
            curve = [float(v) for _, v in sorted(t.intermediate_values.items())] or [
                float(v[0]) for _, v in sorted(record.objective_curve_of(t).items())]
            start, ended = t.datetime_start, t.datetime_complete
            row: dict[str, Any] = {
                "number": t.number, "state": t.state.name,
                **{n: (values[i] if i < len(values) else float("nan")) for i, n in enumerate(names)},
                "epochs": record.epochs_run_of(t, len(curve)), "curve": curve, "params": dict(t.params),
                **{f"params_{k}": v for k, v in t.params.items()},
                "reason": record.end_reason(t),
                "duration_s": (ended - start).total_seconds() if ended and start else float("nan"),
            }
            rows.append(row)
        columns = ["number", "state", *names, "epochs", "curve", "params"]
        frame = pd.DataFrame(rows, columns=list(dict.fromkeys([*columns, *(k for r in rows for k in r)])))
        return frame.set_index("number")

    def export(self, path: str | Path | None = None, *, rank: int = 1, trial: int | None = None) -> dict[str, Any]:
        """The best (or ``rank``-th best, or trial ``trial``'s) full training config with its
        provenance, as ``sweeper export`` writes it; also written to ``path`` when given (JSON for a
        ``.json`` suffix, else YAML).

        Raises:
            InputError: as :func:`sweeper.study.results.export_config` (no such rank or trial; a rank
                asked of a multi-objective study).
        """
        import json

        import yaml

        from sweeper.study.results import export_config

        config = export_config(self.study, self.storage, rank, trial)
        if path is not None:
            out = Path(path)
            out.write_text(json.dumps(config, indent=2) + "\n" if out.suffix == ".json"
                           else yaml.safe_dump(config, sort_keys=False))
        return config

    def retrain(self, output: str | Path = "retrained", *, trial: int | None = None, epochs: int | None = None,
                seeds: int = 1, keep_val: bool = False) -> dict[str, Any]:
        """Retrain the best config (or trial ``trial``'s) on train+val, test it, and write the
        model, metrics and a page to ``output``, as ``sweeper retrain`` does; load the model with
        ``trainers.load_model(output)``.

        Returns:
            the metrics written to ``metrics.json`` (accuracy and macro-F1 per seed, their mean
            and standard deviation, ``evaluated_on``).

        Raises:
            InputError: as :meth:`export`, or the trainer cannot rebuild its model (a sweep of a
                W&B function or program: retrain it with your own code from :meth:`export`'s config).
        """
        from sweeper.retrain import retrain
        from sweeper.study.results import export_config

        return retrain(export_config(self.study, self.storage, trial=trial), Path(output), epochs=epochs,
                       seeds=seeds, keep_val=keep_val)

    def report(self, path: str | Path = "report.html") -> Path:
        """Write the self-contained HTML report (as ``sweeper report``) and return its path."""
        from sweeper.views.report import compute, render

        out = Path(path)
        out.write_text(render(compute(self.study)), encoding="utf-8")
        return out

    def counts(self) -> dict[str, int]:
        """Trials by state name (``{"COMPLETE": 12, "PRUNED": 5, ...}``)."""
        from collections import Counter

        return dict(Counter(t.state.name for t in self.study.get_trials(deepcopy=False)))

    def __repr__(self) -> str:
        try:
            counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts().items()))
        except InputError as err:
            return f"Sweep({self.name!r}: {err})"
        return f"Sweep({self.name!r}, {counts or 'no trials'})"


class Plots:
    """The report's figures (:mod:`sweeper.views.report`), each a ``plotly.graph_objects.Figure`` that
    shows inline in Jupyter. Each call reads the study again."""

    def __init__(self, sweep: Sweep):
        self._sweep = sweep

    def _figure(self, title: str, needs: str) -> go.Figure:
        from sweeper.views.report import compute, figures

        shown = figures(compute(self._sweep.study))
        if title not in shown:
            raise InputError(f"plot: study {self._sweep.name!r} has no {title.lower()} figure: {needs}")
        return shown[title]

    def learning_curves(self) -> go.Figure:
        """Every trial's first objective per epoch, coloured by how the trial ended."""
        return self._figure("Learning curves", "")

    def history(self) -> go.Figure:
        """The COMPLETE trials' values by trial number, with the best so far."""
        return self._figure("Optimisation history", "")

    def timeline(self) -> go.Figure:
        """The trials per worker over time, coloured by how they ended."""
        return self._figure("Timeline", "")

    def importances(self) -> go.Figure:
        """fANOVA parameter importances (Optuna's), for the first objective.

        Raises:
            InputError: fewer than two COMPLETE trials, or no parameter took two values.
        """
        return self._figure("Parameter importances (fANOVA)", "it needs two COMPLETE trials and a parameter "
                            "that varies")

    def parallel(self) -> go.Figure:
        """Parallel coordinates of the COMPLETE trials' parameters and value (Optuna's).

        Raises:
            InputError: fewer than two COMPLETE trials, or no parameter.
        """
        return self._figure("Parallel coordinates", "it needs two COMPLETE trials with parameters")

    def pareto(self) -> go.Figure:
        """The Pareto front of a study of two or three objectives, PRUNED and FAIL trials at their
        last epoch.

        Raises:
            InputError: the study has one objective or more than three, or no COMPLETE trial.
        """
        return self._figure("Pareto front plot", "it needs two or three objectives and a COMPLETE trial")
