"""Search spaces that fit the problem: conditional parameters (``when:``), no configuration run
twice, and warm start from an earlier study; through real sweeps on a local Ray and SQLite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.engine.launch import run_sweep
from sweeper.errors import InputError
from sweeper.spec import validate
from sweeper.study import record
from sweeper.study.results import ranked_trials
from sweeper.study.warm_start import WarmStart, check

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
CONDITIONAL = {
    "optimizer": {"values": ["adam", "sgd"]},
    "momentum": {"values": [0.8, 0.9, 0.95], "when": {"optimizer": "sgd"}},
    "lr": {"values": [0.002, 0.004, 0.008]},
}


def spec(name: str, tmp_path: Path, parameters: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "method": "random", "trainer": "tests.fake_trainers:CONDITIONAL", "epochs": 2,
            "run_cap": 6, "max_concurrent_trials": 2, "storage": f"sqlite:///{tmp_path / 'sweeps.db'}",
            "artifacts": str(tmp_path / "artifacts"), "parameters": parameters, **extra}


def trials(raw: dict[str, Any]) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=raw["name"], storage=raw["storage"]).get_trials()


def configuration(t: optuna.trial.FrozenTrial) -> str:
    return json.dumps(t.params, sort_keys=True)


# --- conditional parameters: the spec --------------------------------------------------------


def test_a_conditional_grid_counts_only_the_combinations_that_exist(tmp_path: Path) -> None:
    sweep = validate(spec("g", tmp_path, CONDITIONAL, method="grid", run_cap=None))
    # adam: 3 learning rates; sgd: 3 momenta x 3 learning rates.
    assert sweep.space.size() == sweep.budget == 12
    grid = sweep.space.grid() or []
    assert len({json.dumps(p, sort_keys=True) for p in grid}) == 12
    assert all(("momentum" in p) == (p["optimizer"] == "sgd") for p in grid)
    assert validate(sweep.stored()).space.size() == 12  # `when` is kept with the study


@pytest.mark.parametrize(("when", "expected"), [
    ({"optimiser": "sgd"}, "parameters.momentum.when.optimiser: 'optimiser' names no parameter of this sweep; "
                           "did you mean 'optimizer'?"),
    ({"optimizer": "rmsprop"}, "parameters.momentum.when.optimizer: 'rmsprop' is not a value optimizer can take"),
    ({"lr_range": 0.1}, "parameters.momentum.when.lr_range: 'lr_range' names a continuous parameter"),
])
def test_a_wrong_condition_is_one_line_naming_it(tmp_path: Path, when: dict[str, Any], expected: str) -> None:
    parameters = {**CONDITIONAL, "momentum": {"values": [0.9], "when": when}, "lr_range": {"min": 0.1, "max": 0.2}}
    with pytest.raises(InputError) as err:
        validate(spec("bad", tmp_path, parameters))
    assert any(str(p).startswith(expected) for p in err.value.problems), err.value.problems


def test_a_cycle_of_conditions_is_one_line(tmp_path: Path) -> None:
    parameters = {**CONDITIONAL, "optimizer": {"values": ["adam", "sgd"], "when": {"momentum": 0.9}}}
    with pytest.raises(InputError) as err:
        validate(spec("cycle", tmp_path, parameters))
    assert [str(p) for p in err.value.problems] == [
        "parameters.momentum.when: 'momentum -> optimizer -> momentum' the conditions form a cycle: each "
        "parameter would wait for the other"]


# --- conditional parameters: real sweeps ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("method", ["random", "bayes", "grid"])
def test_momentum_exists_only_in_sgd_trials(tmp_path: Path, method: str) -> None:
    raw = spec(f"cond-{method}", tmp_path, CONDITIONAL, method=method, run_cap=None if method == "grid" else 8)
    run_sweep(validate(raw))
    done = [t for t in trials(raw) if t.state in FINISHED]
    assert len(done) == (12 if method == "grid" else 8)
    assert {t.params["optimizer"] for t in done} == {"adam", "sgd"}
    for t in done:
        assert ("momentum" in t.params) == (t.params["optimizer"] == "sgd"), t.params
        given = (record.config_of(t) or {})["params"]
        # Without the condition, the trainer's default applies.
        assert given["momentum"] == t.params.get("momentum", 0.9)
    assert len({configuration(t) for t in done}) == len(done)  # no configuration twice


# --- no configuration twice ----------------------------------------------------------------


def test_after_duplicate_draws_the_nearest_unseen_configuration_is_queued() -> None:
    """The sampler kept drawing a configuration that had run: the one queued instead differs from
    it in the fewest parameters (the region the sampler wanted), ties drawn at random."""
    import itertools
    import random

    from sweeper.study.duplicates import nearest

    grid = [dict(zip(("filters", "bn", "augment", "lr"), p, strict=True))
            for p in itertools.product(["small", "large"], [True, False], [True, False], [1e-3, 1e-2])]
    wanted = {"filters": "large", "bn": True, "augment": True, "lr": 1e-3}
    unseen = [p for p in grid if p != wanted]
    picks = {json.dumps(nearest(unseen, wanted, random.Random(seed)), sort_keys=True) for seed in range(50)}
    one_away = {json.dumps(p, sort_keys=True) for p in unseen if sum(p[k] != wanted[k] for k in wanted) == 1}
    assert picks == one_away  # every pick one parameter away, and each of the 4 such picked at some seed
    far = [p for p in unseen if p["filters"] == "small" and not p["bn"]]
    assert nearest(far, wanted, random.Random(0)) in [p for p in far if p["augment"] and p["lr"] == 1e-3]
    with pytest.raises(ValueError):
        nearest([], wanted, random.Random(0))


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("method", ["random", "bayes"])
def test_an_all_categorical_space_runs_each_configuration_once_then_ends(tmp_path: Path, method: str) -> None:
    parameters = {"optimizer": {"values": ["adam", "sgd"]}, "lr": {"values": [0.002, 0.004, 0.008]}}
    exact = spec(f"exact-{method}", tmp_path, parameters, method=method, run_cap=6)
    outcome = run_sweep(validate(exact))
    done = [t for t in trials(exact) if t.state in FINISHED]
    assert len(done) == 6 and len({configuration(t) for t in done}) == 6
    assert outcome.ending is None
    more = spec(f"more-{method}", tmp_path, parameters, method=method, run_cap=9)
    outcome = run_sweep(validate(more))
    all_trials = trials(more)
    done = [t for t in all_trials if t.state in FINISHED]
    assert len(done) == 6 and len({configuration(t) for t in done}) == 6  # stops at the space's size
    assert outcome.ending is not None and outcome.ending.kind == "exhausted"
    assert outcome.ending.reason == "every one of the search space's 6 configurations has run"
    duplicates = [t for t in all_trials if record.is_duplicate_draw(t)]
    study = optuna.load_study(study_name=more["name"], storage=more["storage"])
    assert duplicates and record.duplicate_draws_of(study.user_attrs) == len(duplicates)
    assert all(not record.failed_by_itself(t) for t in duplicates)  # never counted as failures
    from sweeper.views.progress import summary

    head = str(summary(study, validate(more), None, ending=outcome.ending).renderables[0])
    assert f"{len(duplicates)} duplicate draw(s) re-sampled, none run" in head and "search space exhausted" in head


def test_the_launch_of_an_exhausted_space_exits_0_and_says_so(tmp_path: Path) -> None:
    """Through the command: run_cap above the space's size ends with exit 0 and one line saying why."""
    import subprocess
    import sys

    from tests.conftest import write_spec
    from tests.test_resume import REPO

    path = write_spec(tmp_path / "small.yaml", spec("small", tmp_path, {"lr": {"values": [0.002, 0.004]}},
                                                     run_cap=4))
    proc = subprocess.run([sys.executable, "-m", "sweeper", "launch", str(path)], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "search space exhausted: every one of the search space's 2 configurations has run" in proc.stdout


# --- warm start ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_warm_start_skips_the_earlier_configurations_and_informs_tpe(tmp_path: Path) -> None:
    parameters = {"optimizer": {"values": ["adam", "sgd"]}, "lr": {"values": [0.002, 0.004, 0.008, 0.016]},
                  "momentum": {"values": [0.8, 0.9], "when": {"optimizer": "sgd"}}}
    old = spec("old", tmp_path, {**parameters, "lr": {"values": [0.002, 0.004, 0.008, 0.016, 0.03]}},
               method="random", run_cap=8)
    run_sweep(validate(old))
    old_done = [t for t in trials(old) if t.state in FINISHED]
    fits = [t for t in old_done if t.params["lr"] != 0.03]

    cold = spec("cold", tmp_path, parameters, method="bayes", run_cap=4, seed=3, max_concurrent_trials=1)
    run_sweep(validate(cold))
    warm_raw = {**cold, "name": "warm"}
    warm = validate(warm_raw)
    check(warm, WarmStart("old"))
    outcome = run_sweep(warm, warm_start=WarmStart("old"))

    got = trials(warm_raw)
    copies = [t for t in got if record.warm_start_of(t) is not None]
    new = [t for t in got if record.warm_start_of(t) is None and t.state in FINISHED]
    assert len(copies) == len(fits)  # the trials with lr 0.03 lie outside the new space
    assert {record.warm_start_of(t) for t in copies} == {f"old#{t.number}" for t in fits}
    assert all(c.values == o.values for c, o in zip(copies, fits, strict=True))
    assert len(new) == 4 and outcome.finished == 4  # run_cap counts this sweep's trials only
    assert not {configuration(t) for t in new} & {configuration(t) for t in copies}  # not run again
    study = optuna.load_study(study_name="warm", storage=warm_raw["storage"])
    assert all(record.warm_start_of(t) is None for t in ranked_trials(study))  # never the best
    first_cold = next(t for t in trials(cold) if t.number == 0)
    first_warm = min(new, key=lambda t: t.number)
    assert first_cold.params != first_warm.params  # TPE starts from the earlier trials, not from nothing


def test_warm_start_refuses_what_does_not_carry_over(tmp_path: Path) -> None:
    raw = spec("w", tmp_path, CONDITIONAL)
    with pytest.raises(InputError, match="--warm-start: no study 'missing'"):
        check(validate(raw), WarmStart("missing"))
    with pytest.raises(InputError, match="--warm-start: grid search runs every point"):
        check(validate({**raw, "method": "grid", "run_cap": None}), WarmStart("old"))
    optuna.create_study(study_name="other", storage=raw["storage"], direction="minimize").set_user_attr(
        record.STUDY_SPEC, {"metric": {"name": "val_loss", "goal": "minimize"}})
    with pytest.raises(InputError, match=r"optimised val_loss \(minimize\); this sweep optimises val_accuracy"):
        check(validate(raw), WarmStart("other"))
