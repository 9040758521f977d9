"""Input that must be refused or handled, not crash or hang (issue 22, part 1).

Each refusal is one line naming the field, the value and the rule, exit code 2, no traceback,
and nothing written: no study, no file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.spec import build_space
from sweeper.spec._schema import ParameterSpec
from sweeper.spec._space import GRID_POINTS_MAX
from tests.conftest import write_spec

runner = CliRunner()

BASE: dict[str, Any] = {
    "name": "hostile",
    "method": "random",
    "trainer": "tests.fake_trainers:plain_fit",
    "metric": {"name": "score"},
    "epochs": 1,
    "storage": "sqlite:///hostile.db",
    "parameters": {"lr": {"min": 0.001, "max": 0.02}},
}


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(args: list[str], *must_name: str) -> str:
    """Run the CLI; assert exit 2, one ``error:`` line naming each of ``must_name``, no traceback."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for word in must_name:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def spec_with(folder: Path, **changes: Any) -> Path:
    return write_spec(folder / "s.yaml", {**BASE, **changes})


# --- 1. memory: sizes are counted, grids walked lazily, a huge grid refused


def test_a_two_billion_value_int_uniform_validates_at_once(in_tmp: Path) -> None:
    spec = spec_with(in_tmp, parameters={"seed_param": {"min": 0, "max": 2**31 - 1}})
    started = time.perf_counter()
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 0, result.output
    assert f"{2**31} distinct configuration(s)" in result.output
    assert time.perf_counter() - started < 10


def test_a_condition_on_a_huge_range_is_checked_without_listing_it(in_tmp: Path) -> None:
    params = {"n": {"min": 0, "max": 2**31 - 1}, "lr": {"min": 0.1, "max": 0.2, "when": {"n": [0, 7]}},
              "m": {"values": [1, 2], "when": {"n": 2**40}}}
    spec = spec_with(in_tmp, parameters=params)
    line = refused(["validate", str(spec)], "parameters.m.when.n", str(2**40), "from 0 to 2147483647")
    assert len(line) < 300


def test_a_million_point_conditional_space_is_counted_not_enumerated() -> None:
    params = {"arch": ParameterSpec(values=["a", "b", "c"]),
              "x": ParameterSpec(min=0, max=999_999, when={"arch": "a"}),
              "y": ParameterSpec(min=0, max=999, when={"arch": ["b", "c"]}),
              "z": ParameterSpec(values=[1, 2, 3, 4], when={"y": [0, 1, 2]})}
    space, problems = build_space(params)
    assert problems == []
    started = time.perf_counter()
    # arch a: 10^6 x values; b and c: y 0..2 with 4 z values each, 997 other y alone.
    assert space.size() == 1_000_000 + 2 * (3 * 4 + 997)
    assert time.perf_counter() - started < 0.5
    assert space.iter_grid() is not None


def test_conditional_count_matches_the_listed_grid() -> None:
    params = {"opt": ParameterSpec(values=["sgd", "adam", "rms"]),
              "mom": ParameterSpec(min=0.0, max=0.5, distribution="q_uniform", q=0.25, when={"opt": ["sgd", "rms"]}),
              "nest": ParameterSpec(values=[True, False], when={"mom": [0.25, 0.5]}),
              "k": ParameterSpec(value=3),
              "w": ParameterSpec(min=1, max=4, when={"k": 3, "opt": "adam"})}
    space, problems = build_space(params)
    assert problems == []
    grid = space.grid() or []
    assert space.size() == len(grid) == len({tuple(sorted(p.items())) for p in grid}) == 2 * (1 + 2 * 2) + 4


def test_a_grid_too_large_to_run_is_refused_with_its_size(in_tmp: Path) -> None:
    params = {f"p{i}": {"min": 0, "max": 99} for i in range(10)}  # 100^10 = 10^20 points
    spec = spec_with(in_tmp, method="grid", parameters=params)
    started = time.perf_counter()
    for command in ("validate", "launch"):
        refused([command, str(spec)], "parameters", str(100**10), f"{GRID_POINTS_MAX:,}")
    assert time.perf_counter() - started < 20
    assert files_in(in_tmp) == ["s.yaml"]


# --- 2. YAML: size, alias bombs, deep nests, duplicate keys


def _write(folder: Path, text: str) -> Path:
    path = folder / "s.yaml"
    path.write_text(text)
    return path


def test_a_billion_laughs_spec_is_refused(in_tmp: Path) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False) + "bomb0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    text += "".join(f"bomb{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9))
    started = time.perf_counter()
    refused(["launch", str(_write(in_tmp, text))], "s.yaml", "expands to more than", "alias")
    assert time.perf_counter() - started < 10
    assert files_in(in_tmp) == ["s.yaml"]


def test_a_spec_over_a_megabyte_is_refused_before_parsing(in_tmp: Path) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False) + "description: '" + "x" * 1_100_000 + "'\n"
    started = time.perf_counter()
    refused(["validate", str(_write(in_tmp, text))], "s.yaml", "larger than 1,000,000 bytes")
    assert time.perf_counter() - started < 5


def test_a_deep_nest_is_refused(in_tmp: Path) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False) + "description: " + "[" * 50_000 + "\n"
    refused(["validate", str(_write(in_tmp, text))], "s.yaml", "nests deeper than")


def test_a_duplicate_key_is_refused_naming_it(in_tmp: Path) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False) + "method: grid\n"
    refused(["launch", str(_write(in_tmp, text))], "s.yaml", "'method'", "twice")
    assert files_in(in_tmp) == ["s.yaml"]


def test_merge_keys_may_still_override(in_tmp: Path) -> None:
    text = yaml.safe_dump({k: v for k, v in BASE.items() if k != "parameters"}, sort_keys=False)
    text += "parameters:\n  lr: &lr {min: 0.001, max: 0.02}\n  wd:\n    <<: *lr\n    max: 0.01\n"
    result = runner.invoke(app, ["validate", str(_write(in_tmp, text))])
    assert result.exit_code == 0, result.output


# --- 3. numbers: every bound finite


@pytest.mark.parametrize(("param", "field", "shown"), [
    ({"min": float("nan"), "max": 1.0}, "min", "nan"),
    ({"min": 0, "max": float("inf"), "distribution": "q_uniform", "q": 1}, "max", "inf"),
    ({"min": 0.0, "max": 1.0, "distribution": "q_uniform", "q": float("nan")}, "q", "nan"),
    ({"distribution": "normal", "mu": float("-inf")}, "mu", "-inf"),
    ({"distribution": "normal", "sigma": float("nan")}, "sigma", "nan"),
    ({"values": [0.1, float("nan")]}, "values", "nan"),
    ({"min": 0, "max": 10**400}, "max", "1000"),
])
def test_a_non_finite_bound_is_refused_before_anything_is_written(in_tmp: Path, param: dict[str, Any], field: str,
                                                                  shown: str) -> None:
    spec = spec_with(in_tmp, parameters={"lr": param})
    for command in ("validate", "launch"):
        refused([command, str(spec)], f"parameters.lr.{field}", shown, "finite")
    assert files_in(in_tmp) == ["s.yaml"]


def test_a_step_too_small_for_its_range_is_refused(in_tmp: Path) -> None:
    spec = spec_with(in_tmp, parameters={"lr": {"min": -1e300, "max": 1e300, "distribution": "q_uniform",
                                                "q": 1e-300}})
    refused(["validate", str(spec)], "parameters.lr.q", "too small")
