"""The whole W&B sweep format: every distribution drawn exactly as W&B draws it, nested
parameters, metric.target, W&B's scheduler form and metric names with '/' or '.'."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from scipy import stats
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.errors import InputError
from sweeper.spec import build_space, validate
from sweeper.spec._schema import ParameterSpec
from sweeper.spec._validate import DEFAULT_ASHA
from sweeper.study.samplers import WeightedRandomSampler
from tests.conftest import write_spec

runner = CliRunner()
DRAWS = 4000


def draws(spec: dict, n: int = DRAWS, seed: int = 0) -> np.ndarray:
    """``n`` values of one parameter as random search gives them to the trainer."""
    space, problems = build_space({"x": ParameterSpec.model_validate(spec)})
    assert not problems, problems
    [dim] = space.dimensions
    probabilities = {dim.name: dim.probabilities} if dim.probabilities else {}
    study = optuna.create_study(sampler=WeightedRandomSampler(probabilities, seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask(fixed_distributions=space.distributions)
        out.append(space.config(trial.params)["x"])
        study.tell(trial, 0.0)
    return np.asarray(out, dtype=float)


# (spec, the distribution W&B draws from, as a SciPy frozen distribution), each from W&B's sweeps
# library (params.py: each distribution's ppf; config/schema.json: the defaults).
CONTINUOUS = [
    ({"distribution": "normal", "mu": 2.0, "sigma": 0.5}, stats.norm(loc=2.0, scale=0.5)),
    ({"distribution": "normal"}, stats.norm(0.0, 1.0)),  # W&B's defaults mu 0, sigma 1
    ({"distribution": "log_normal", "mu": -3.0, "sigma": 0.7}, stats.lognorm(s=0.7, scale=math.exp(-3.0))),
    ({"distribution": "beta", "a": 2.0, "b": 5.0}, stats.beta(2.0, 5.0)),
    ({"distribution": "beta"}, stats.beta(1.0, 1.0)),  # defaults a 1, b 1
    # inv_log_uniform: exp(-X), X uniform in [min, max]; the _values form: 1/x log-uniform in [1/max, 1/min]
    ({"distribution": "inv_log_uniform", "min": 2.0, "max": 6.0}, stats.loguniform(math.exp(-6), math.exp(-2))),
    ({"distribution": "inv_log_uniform_values", "min": 0.001, "max": 0.1}, stats.loguniform(0.001, 0.1)),
    ({"distribution": "log_uniform", "min": -5.0, "max": 0.0}, stats.loguniform(math.exp(-5), 1.0)),
]


@pytest.mark.parametrize(("spec", "law"), CONTINUOUS, ids=[str(c[0]) for c in CONTINUOUS])
def test_random_search_draws_each_continuous_distribution_exactly(spec: dict, law: object) -> None:
    values = draws(spec)
    ks = stats.kstest(values, law.cdf)  # type: ignore[attr-defined]
    assert ks.pvalue > 1e-3, (spec, ks)
    # and not some other law: a shifted one is rejected by the same test
    shifted = stats.kstest(values + 0.3 * float(np.std(values)), law.cdf)  # type: ignore[attr-defined]
    assert shifted.pvalue < 1e-3


QUANTISED = [
    ({"distribution": "q_normal", "mu": 10.0, "sigma": 3.0, "q": 2}, stats.norm(10.0, 3.0), 2),
    ({"distribution": "q_log_normal", "mu": 2.0, "sigma": 0.5, "q": 1}, stats.lognorm(s=0.5, scale=math.exp(2.0)), 1),
    ({"distribution": "q_beta", "a": 2.0, "b": 2.0, "q": 0.25}, stats.beta(2.0, 2.0), 0.25),
    ({"distribution": "q_log_uniform", "min": 0.0, "max": 4.0, "q": 5}, stats.loguniform(1.0, math.exp(4)), 5),
    ({"distribution": "q_normal"}, stats.norm(0.0, 1.0), 1),  # q defaults to 1
]


@pytest.mark.parametrize(("spec", "law", "q"), QUANTISED, ids=[str(c[0]) for c in QUANTISED])
def test_random_search_draws_each_quantised_distribution_exactly(spec: dict, law: object, q: float) -> None:
    """round(X / q) * q: each multiple k*q has the probability of X falling within q/2 of it (chi-square)."""
    values = draws(spec)
    assert np.allclose(values / q, np.round(values / q))
    counts = Counter(np.round(values / q).astype(int).tolist())
    cdf = law.cdf  # type: ignore[attr-defined]
    ks = sorted(counts)
    expected = np.array([cdf((k + 0.5) * q) - cdf((k - 0.5) * q) for k in ks])
    # the two ends take the tails
    expected[0] += cdf((ks[0] - 0.5) * q)
    expected[-1] += 1 - cdf((ks[-1] + 0.5) * q)
    observed = np.array([counts[k] for k in ks], dtype=float)
    keep = expected * DRAWS >= 5  # chi-square needs enough expected draws per cell
    obs, exp = observed[keep], expected[keep] * DRAWS
    exp *= obs.sum() / exp.sum()
    assert stats.chisquare(obs, exp).pvalue > 1e-3, spec
    if isinstance(spec.get("q", 1), int):
        assert all(float(v).is_integer() for v in values)


def test_categorical_w_probabilities_follows_its_probabilities() -> None:
    spec = {"distribution": "categorical_w_probabilities", "values": [1, 2, 3], "probabilities": [0.6, 0.3, 0.1]}
    counts = Counter(draws(spec).astype(int).tolist())
    assert stats.chisquare([counts[v] for v in (1, 2, 3)], [0.6 * DRAWS, 0.3 * DRAWS, 0.1 * DRAWS]).pvalue > 1e-3


@pytest.mark.parametrize(("spec", "line"), [
    ({"distribution": "normal", "min": 0, "max": 1}, "parameters.x.max: 1 does not apply to normal"),
    ({"distribution": "normal", "sigma": 0}, "parameters.x.sigma: 0.0 must be greater than 0"),
    ({"distribution": "beta", "a": -1}, "parameters.x.a: -1.0 must be greater than 0"),
    ({"values": [1, 2], "mu": 0.5}, "parameters.x.mu: 0.5 applies to normal, q_normal, log_normal, q_log_normal"),
    ({"distribution": "categorical_w_probabilities", "values": [1, 2]}, "parameters.x.probabilities: (missing)"),
    ({"distribution": "q_normal", "q": 0}, "parameters.x.q: 0 must be a positive number for q_normal"),
    ({"distribution": "uniform", "min": 0.0, "max": 1.0, "q": 0.5}, "parameters.x.q: 0.5 applies to q_uniform"),
    ({"distribution": "gamma", "min": 0.0, "max": 1.0}, "parameters.x.distribution: 'gamma' must be one of"),
    ({"parameters": {}}, "parameters.x.parameters: {} must hold at least one parameter"),
    ({"parameters": {"y": {"value": 1}}, "value": 2}, "parameters.x: ['parameters', 'value'] holds nested"),
])
def test_bad_distribution_keys_are_one_line_each(spec: dict, line: str) -> None:
    with pytest.raises(InputError) as err:
        validate({"method": "random", "trainer": "tests.fake_trainers:plain_fit", "metric": {"name": "score"},
                  "parameters": {"x": spec}})
    assert len(err.value.problems) == 1 and str(err.value.problems[0]).startswith(line), err.value.problems


def test_nested_parameters_reach_the_trainer_nested_and_the_study_dotted(tmp_path: Path) -> None:
    spec = {"name": "nested", "method": "random", "storage": f"sqlite:///{tmp_path / 'n.db'}",
            "trainer": "tests.fake_trainers:plain_fit", "metric": {"name": "score"},
            "parameters": {"optimizer": {"parameters": {
                "name": {"values": ["adam", "sgd"]},
                "learning_rate": {"min": 0.0001, "max": 0.1, "distribution": "log_uniform_values"},
                "schedule": {"parameters": {"warmup": {"value": 2}, "gamma": {"distribution": "beta"}}}}},
                "batch_size": {"value": 64}}}
    sweep = validate(spec)
    assert sorted(d.name for d in sweep.space.dimensions) == [
        "optimizer.learning_rate", "optimizer.name", "optimizer.schedule.gamma"]
    study = optuna.create_study(sampler=WeightedRandomSampler({}, seed=1))
    trial = study.ask(fixed_distributions=sweep.space.distributions)
    config = sweep.trial_config(trial.params, trial.number)
    params = config["params"]
    assert params["batch_size"] == 64 and params["optimizer"]["schedule"]["warmup"] == 2
    assert params["optimizer"]["name"] in ("adam", "sgd") and 1e-4 <= params["optimizer"]["learning_rate"] <= 0.1
    assert 0 < params["optimizer"]["schedule"]["gamma"] < 1
    assert validate(sweep.stored()).space == sweep.space  # the stored spec (what resume reads) keeps the nesting
    # export -> train: the exported file trains with the nested values
    config_file = write_spec(tmp_path / "best.yaml", config)
    result = runner.invoke(app, ["train", str(config_file)])
    assert result.exit_code == 0, result.output
    assert "final: score 1.0000" in result.output


def test_wandb_scheduler_engine_form_is_recognised(tmp_path: Path) -> None:
    base = {"method": "bayes", "name": "eng", "storage": f"sqlite:///{tmp_path / 'e.db'}",
            "parameters": {"lr": {"min": 0.0001, "max": 0.01}}}
    sweep = validate({**base, "scheduler": {"engine": "optuna", "settings": {"pruner": {"type": "Hyperband"}}}})
    # The engine's settings are ignored: method bayes runs with sweeper's default early stopping.
    assert sweep.asha == DEFAULT_ASHA and any("W&B's engine form" in w for w in sweep.warnings)
    with pytest.raises(InputError) as err:
        validate({**base, "scheduler": {"engine": "ray", "num_workers": 2}})
    assert [str(p) for p in err.value.problems] == [
        "scheduler.engine: 'ray' is a W&B external engine sweeper cannot run; use engine: optuna (sweeper's own "
        "Optuna samplers) or remove `scheduler`"]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_metric_target_stops_the_sweep_and_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B's metric.target: once a finished trial reaches it, no new trial starts and the sweep
    ends successfully, short of its budget; the metric's name has a '/' as W&B users write it."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 't.db'}"
    spec = write_spec(tmp_path / "target.yaml", {
        "name": "target", "method": "random", "run_cap": 12, "epochs": 2, "max_concurrent_trials": 1,
        "trainer": "tests.fake_trainers:slash_metric", "metric": {"name": "val/acc", "goal": "maximize",
                                                                  "target": 0.5},
        "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2}, "storage": url,
        "parameters": {"lr": {"values": [0.9, 0.1]}}, "seed": 3})
    result = runner.invoke(app, ["launch", str(spec)])
    assert result.exit_code == 0, result.output
    assert "reached metric.target: val/acc" in result.output
    trials = optuna.load_study(study_name="target", storage=url).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 1 <= len(complete) < 12 and complete[-1].value is not None and complete[-1].value >= 0.5
    assert all(t.number <= complete[-1].number for t in trials)  # nothing started after it
    assert all(list(t.intermediate_values) in ([1], [1, 2]) for t in trials if t.state != TrialState.FAIL)


def test_early_terminate_judges_the_best_so_far_unless_strict() -> None:
    """W&B hyperband compares a run's best value so far with a band's threshold, or, with
    `strict: true`, its value at the band (W&B's sweeps library, hyperband_stopping.py)."""
    from sweeper.engine.scheduler import RecordingASHA, make_scheduler

    class Stub:
        def __init__(self, trial_id: str):
            self.trial_id = trial_id

    def decisions(strict: bool) -> str:
        sweep = validate({"method": "random", "trainer": "tests.fake_trainers:plain_fit", "epochs": 4,
                          "metric": {"name": "score", "goal": "maximize"},
                          "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2, "strict": strict}})
        asha = make_scheduler(sweep)
        assert isinstance(asha, RecordingASHA)
        leader: object = Stub("leader")
        asha.on_trial_add(None, leader)  # type: ignore[arg-type]
        for epoch, value in ((1, 0.5), (2, 0.6)):
            asha.on_trial_result(None, leader, {"epoch": epoch, "score": value})  # type: ignore[arg-type]
        dipper: object = Stub("dipper")  # 0.9 at epoch 1, 0.55 at the rung (epoch 2)
        asha.on_trial_add(None, dipper)  # type: ignore[arg-type]
        asha.on_trial_result(None, dipper, {"epoch": 1, "score": 0.9})  # type: ignore[arg-type]
        return asha.on_trial_result(None, dipper, {"epoch": 2, "score": 0.55})  # type: ignore[arg-type]

    assert decisions(strict=False) == "CONTINUE"  # its best (0.9) beats the rung's cut-off
    assert decisions(strict=True) == "STOP"  # its value at the rung (0.55) does not
