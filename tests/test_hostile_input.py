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


# --- 4. files and URLs: one line, exit 2, never a password


def test_a_spec_that_is_not_utf8_is_one_line(in_tmp: Path) -> None:
    path = in_tmp / "s.yaml"
    path.write_bytes(yaml.safe_dump(BASE).encode() + "description: caf\xe9\n".encode("latin-1"))
    refused(["launch", str(path)], "s.yaml", "not UTF-8", "0xe9")
    assert files_in(in_tmp) == ["s.yaml"]


PASSWORD = "s3cr3t-pw"
BAD_URLS = [f"postgresql+psycopg://bob:{PASSWORD}@db.example:5x32/sweeps",  # the port is not a number
            f"postgresql+psycopg//bob:{PASSWORD}@db.example/sweeps",  # no "://": unparsable
            f"bob:{PASSWORD}@db.example/sweeps"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_storage_url_is_one_line_that_hides_its_password(in_tmp: Path, url: str) -> None:
    spec = spec_with(in_tmp)
    runs = [["validate", str(spec), "--set", f"storage={url}"], ["launch", str(spec), "--storage", url],
            ["studies", "--storage", url], ["show", "hostile", "--storage", url],
            ["export", "hostile", "--storage", url], ["resume", "hostile", "--storage", url]]
    for args in runs:
        line = refused(args, "storage", "bob:***@")
        assert PASSWORD not in line
    assert files_in(in_tmp) == ["s.yaml"]


def _garbage(folder: Path) -> Path:
    path = folder / "garbage.db"
    path.write_bytes(b"this is not an SQLite database\n" * 200)
    return path


def _truncated(folder: Path) -> Path:
    import optuna

    full = folder / "full.db"
    study = optuna.create_study(study_name="hostile", storage=f"sqlite:///{full}")
    for _ in range(300):
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0, 1))
    path = folder / "truncated.db"
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    full.unlink()
    return path


@pytest.mark.parametrize("make", [_garbage, _truncated])
def test_a_garbage_or_truncated_database_is_one_line(in_tmp: Path, make: Any) -> None:
    db = make(in_tmp)
    before = db.read_bytes()
    url = f"sqlite:///{db.name}"
    for args in (["studies", "--storage", url], ["show", "hostile", "--storage", url],
                 ["report", "hostile", "--storage", url], ["export", "hostile", "--storage", url]):
        refused(args, "storage", db.name, "cannot be read as a study database")
    if make is _garbage:
        refused(["launch", str(spec_with(in_tmp)), "--storage", url], "storage", "not a database")
    assert db.read_bytes() == before
    assert sorted(p for p in files_in(in_tmp) if not p.startswith(db.name)) == sorted(
        ["s.yaml"] if make is _garbage else [])


# --- 5. study names: a safe set of characters


@pytest.mark.parametrize("name", ["..", "a/b", "../outside", "nul\x00byte", "\x1b[31mred\x1b[0m", ".hidden", "-x",
                                  "with space", "x" * 101])
def test_an_unsafe_study_name_is_refused(in_tmp: Path, name: str) -> None:
    spec = spec_with(in_tmp, name=name)
    for command in ("validate", "launch"):
        line = refused([command, str(spec)], "name:", "letters, digits")
        assert "\x1b" not in line and "\x00" not in line
    if "\x00" not in name:
        refused(["launch", str(spec_with(in_tmp)), "--study", name], "name:")
    assert files_in(in_tmp) == ["s.yaml"]


def test_a_safe_study_name_is_accepted(in_tmp: Path) -> None:
    result = runner.invoke(app, ["validate", str(spec_with(in_tmp, name="run-2.v_3"))])
    assert result.exit_code == 0, result.output


# --- 6. reads write nothing


def test_show_on_an_empty_database_writes_nothing(in_tmp: Path) -> None:
    (in_tmp / "empty.db").write_bytes(b"")
    for args in (["show", "hostile"], ["export", "hostile"], ["report", "hostile"]):
        refused([*args, "--storage", "sqlite:///empty.db"], "study:", "'hostile'", "does not exist")
    result = runner.invoke(app, ["studies", "--storage", "sqlite:///empty.db"])
    assert result.exit_code == 0 and "no studies" in result.output, result.output
    assert (in_tmp / "empty.db").stat().st_size == 0
    assert files_in(in_tmp) == ["empty.db"]


def test_reading_a_study_leaves_its_file_unchanged(in_tmp: Path) -> None:
    import optuna

    db = in_tmp / "real.db"
    study = optuna.create_study(study_name="plain", storage=f"sqlite:///{db}")
    study.tell(study.ask(), 1.0)
    del study
    before = db.read_bytes()
    result = runner.invoke(app, ["studies", "--storage", "sqlite:///real.db"])
    assert result.exit_code == 0 and "plain" in result.output, result.output
    refused(["show", "plain", "--storage", "sqlite:///real.db"], "not created by sweeper")
    assert db.read_bytes() == before
    assert files_in(in_tmp) == ["real.db"]


def test_a_database_in_a_read_only_folder_can_be_read(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import optuna

    folder = in_tmp / "ro"
    folder.mkdir()
    db = folder / "real.db"
    optuna.create_study(study_name="plain", storage=f"sqlite:///{db}")
    writable = os.access
    # root may write anywhere: the folder is made read-only, and the check is told so.
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == folder and mode == os.W_OK
                        else writable(p, mode))
    folder.chmod(0o555)
    try:
        result = runner.invoke(app, ["studies", "--storage", f"sqlite:///{db}"])
    finally:
        folder.chmod(0o755)
    assert result.exit_code == 0 and "plain" in result.output, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["real.db"]
