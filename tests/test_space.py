"""W&B distributions → Optuna, and the samplers: statistics, not eyeballing."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweeper.spec import build_space, validate
from sweeper.spec._schema import ParameterSpec
from sweeper.study.samplers import WeightedRandomSampler, make_sampler


def space_of(**params: dict) -> dict:
    space, problems = build_space({k: ParameterSpec.model_validate(v) for k, v in params.items()})
    assert not problems, problems
    return {d.name: d for d in space.dimensions} | {"_constants": space.constants, "_space": space}


def test_each_wandb_distribution_translates() -> None:
    s = space_of(
        a={"min": 2, "max": 9},  # ints, no distribution: int_uniform
        b={"min": 0.5, "max": 1.5},  # floats: uniform
        c={"min": 0.0, "max": 1.0, "distribution": "q_uniform", "q": 0.25},
        d={"min": 1e-4, "max": 1e-1, "distribution": "log_uniform_values"},
        e={"min": -4.0, "max": 0.0, "distribution": "log_uniform"},
        f={"min": 16, "max": 256, "distribution": "q_log_uniform_values", "q": 16},
        g={"values": ["x", "y"]},
        h={"value": [1, 2, 3]},
        i={"min": 10, "max": 100, "distribution": "q_uniform", "q": 30},
    )
    assert s["a"].distribution == IntDistribution(2, 9)
    assert s["b"].distribution == FloatDistribution(0.5, 1.5)
    assert s["c"].distribution == FloatDistribution(0.0, 1.0, step=0.25)
    assert s["d"].distribution == FloatDistribution(1e-4, 1e-1, log=True)
    assert s["e"].distribution.low == pytest.approx(math.exp(-4)) and s["e"].distribution.log
    assert s["f"].distribution == FloatDistribution(16.0, 256.0, log=True) and s["f"].q == 16
    assert s["f"].decode(100.0) == 96 and isinstance(s["f"].decode(100.0), int)
    assert s["g"].distribution == CategoricalDistribution(["x", "y"])
    assert s["_constants"] == {"h": [1, 2, 3]}
    assert s["i"].distribution == IntDistribution(10, 100, step=30)  # W&B ints stay ints
    assert s["_space"].size() is None


def test_list_values_are_one_choice_each() -> None:
    s = space_of(filters={"values": [[32, 32], [32, 64]]}, mixed={"values": [1, "two", None]})
    assert s["filters"].encoded and s["filters"].distribution.choices == ("[32, 32]", "[32, 64]")
    assert s["filters"].decode("[32, 64]") == [32, 64]
    assert [s["mixed"].decode(c) for c in s["mixed"].distribution.choices] == [1, "two", None]


def test_grid_points_enumerate_the_product_once() -> None:
    space = space_of(a={"values": [1, 2, 3]}, b={"min": 0, "max": 10, "distribution": "q_uniform", "q": 5},
                     c={"value": "fixed"})["_space"]
    grid = space.grid()
    assert space.size() == 9 and len(grid) == 9
    assert len({tuple(sorted(p.items())) for p in grid}) == 9
    assert {p["b"] for p in grid} == {0, 5, 10}


def test_random_sampler_honours_probabilities() -> None:
    """2,000 draws: each frequency within 4 standard errors of its probability (W&B semantics)."""
    probs = (0.6, 0.3, 0.1)
    sampler = WeightedRandomSampler({"act": probs}, seed=1)
    study = optuna.create_study(sampler=sampler)
    dist = {"act": CategoricalDistribution(["relu", "gelu", "mish"]), "lr": FloatDistribution(0.0, 1.0)}
    n = 2000
    draws = [study.ask(dist) for _ in range(n)]
    counts = Counter(t.params["act"] for t in draws)
    for choice, p in zip(("relu", "gelu", "mish"), probs, strict=True):
        se = math.sqrt(p * (1 - p) / n)
        assert abs(counts[choice] / n - p) < 4 * se, counts
    lrs = np.array([t.params["lr"] for t in draws])
    assert abs(lrs.mean() - 0.5) < 4 * math.sqrt(1 / 12 / n)  # the rest stays uniform


def test_random_sampler_is_seeded() -> None:
    dist = {"x": FloatDistribution(0.0, 1.0)}
    a = [optuna.create_study(sampler=WeightedRandomSampler({}, seed=7)).ask(dist).params["x"] for _ in range(1)]
    b = [optuna.create_study(sampler=WeightedRandomSampler({}, seed=7)).ask(dist).params["x"] for _ in range(1)]
    assert a == b


def test_log_uniform_samples_are_log_uniform() -> None:
    """W&B log_uniform (exponents): the log of 3,000 samples is uniform on [min, max]."""
    s = space_of(lr={"min": -9.0, "max": -3.0, "distribution": "log_uniform"})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    logs = np.log([study.ask({"lr": s["lr"].distribution}).params["lr"] for _ in range(3000)])
    assert logs.min() >= -9.0 - 1e-9 and logs.max() <= -3.0 + 1e-9
    hist, _ = np.histogram(logs, bins=6, range=(-9, -3))
    assert hist.min() > 400 and hist.max() < 600  # 500 expected per bin


def test_bayes_is_multivariate_tpe_with_constant_liar_in_parallel_in_a_continuous_space() -> None:
    sweep = validate({"name": "b", "method": "bayes", "run_cap": 30,
                      "parameters": {"lr": {"min": 0.001, "max": 0.1}}})
    parallel = make_sampler(sweep, concurrency=4)
    assert isinstance(parallel, optuna.samplers.TPESampler)
    assert parallel._multivariate and parallel._constant_liar
    assert parallel._n_startup_trials == 10
    assert not make_sampler(sweep, concurrency=1)._constant_liar
    # a finite space: the duplicate check does the liar's work (sweeper.study.samplers' docstring)
    finite = validate({"name": "b", "method": "bayes", "run_cap": 30,
                       "parameters": {"lr": {"values": [0.001, 0.01, 0.1]}, "dropout": {"values": [0.0, 0.3]}}})
    assert not make_sampler(finite, concurrency=4)._constant_liar
    assert make_sampler(finite, concurrency=4)._multivariate


def test_tpe_beats_random_on_a_known_function() -> None:
    """Sanity of the bayes path: on a 1-D quadratic TPE's best of 40 beats random's (same seed)."""
    sweep = validate({"name": "b", "method": "bayes", "run_cap": 40,
                      "parameters": {"lr": {"min": 0.001, "max": 1.0}}})
    dist = sweep.space.distributions

    def best_of(sampler: optuna.samplers.BaseSampler) -> float:
        study = optuna.create_study(sampler=sampler)
        for _ in range(40):
            t = study.ask(dist)
            study.tell(t, (t.params["lr"] - 0.731) ** 2)
        return study.best_value

    tpe = np.median([best_of(make_sampler(validate({**sweep.stored(), "seed": s}), 1)) for s in range(5)])
    rnd = np.median([best_of(optuna.samplers.RandomSampler(seed=s)) for s in range(5)])
    assert tpe < rnd
