"""The report: its data objects on a real small study, and the HTML in a real headless browser."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.spec import validate
from sweeper.views.report import compute, figures, render

BROWSER_ENV = "SWEEPER_TEST_BROWSER"


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> optuna.Study:
    """A real sweep through Ray with ASHA: COMPLETE, PRUNED and FAIL trials."""
    from sweeper.engine.launch import run_sweep

    tmp = tmp_path_factory.mktemp("report")
    sweep = validate({
        "name": "report", "method": "random", "run_cap": 8, "trainer": "tests.fake_trainers:CURVE", "epochs": 4,
        "max_concurrent_trials": 2, "max_failed_trials": 10, "seed": 2, "storage": f"sqlite:///{tmp / 'r.db'}",
        "artifacts": str(tmp / "artifacts"), "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2},
        "parameters": {"lr": {"min": 0.001, "max": 0.05}, "fail": {"values": [True, False],
                                                                    "probabilities": [0.3, 0.7]}},
    })
    return run_sweep(sweep).study


@pytest.mark.slow
def test_report_data_matches_the_study(swept: optuna.Study) -> None:
    trials = swept.get_trials()
    data = compute(swept)
    assert data.counts == {s.name: sum(t.state == s for t in trials) for s in {t.state for t in trials}}
    assert {"COMPLETE", "PRUNED", "FAIL"} <= set(data.counts)
    h = data.history
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.number)
    assert h.numbers == [t.number for t in complete] and h.values == [t.value for t in complete]
    assert all(b >= v for b, v in zip(h.best_so_far, h.values, strict=True))
    assert h.best_so_far[-1] == swept.best_value
    assert len(data.curves) == sum(bool(t.intermediate_values) for t in trials)
    assert all(len(c.epochs) < 4 for c in data.curves if c.state == "PRUNED")
    a = data.accounting
    assert a.epochs_run == sum(t.user_attrs["epochs_run"] for t in trials)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    fail_epochs = sum(t.user_attrs["epochs_run"] for t in trials if t.state == TrialState.FAIL)
    assert a.epochs_without_stopping == finished * 4 + fail_epochs
    assert 0 < a.saved_fraction < 1 and 0 < a.busy_fraction <= 1 and a.workers <= 2
    assert [r.values for r in data.top] == sorted(((t.value,) for t in complete), reverse=True)
    assert data.top[0].number == swept.best_trial.number
    assert {"Optimisation history", "Learning curves", "Timeline", "Parallel coordinates", "Slices",
            "Parameter importances (fANOVA)"} <= set(figures(data))


def _browser() -> str | None:
    return os.environ.get(BROWSER_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(_browser() is None and not os.environ.get(BROWSER_ENV), reason="no chromium to render in")
def test_report_html_renders_in_headless_chromium(swept: optuna.Study, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render(compute(swept)), encoding="utf-8")
    assert "https://" not in page.read_text().split("<body>")[0]  # nothing fetched: plotly.js is inline
    browser = _browser()
    assert browser is not None, f"{BROWSER_ENV} names no browser"
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console
    dom = done.stdout
    assert dom.count('class="main-svg"') >= 6  # every figure was drawn by plotly.js
    assert "Study report" in dom and 'id="top"' in dom
