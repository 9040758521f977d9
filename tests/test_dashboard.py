"""`sweeper dashboard`: optuna-dashboard over HTTP and in a headless browser, while a sweep writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import write_spec
from tests.test_report import _browser

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_dashboard_reads_a_study_while_a_sweep_writes_it(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    spec = write_spec(tmp_path / "live.yaml", {
        "name": "live", "method": "random", "run_cap": 16, "trainer": "tests.fake_trainers:CURVE", "epochs": 3,
        "max_concurrent_trials": 2, "storage": url,
        "parameters": {"lr": {"min": 0.001, "max": 0.05}, "sleep_s": {"value": 0.2}},
    })
    # Outputs go to files: a pipe nobody reads fills up and blocks the writer.
    sweep_log, server_log = (tmp_path / "sweep.log").open("w"), (tmp_path / "server.log").open("w")
    sweep = subprocess.Popen([sys.executable, "-m", "sweeper", "launch", str(spec)], cwd=tmp_path, env=env,
                             stdout=sweep_log, stderr=subprocess.STDOUT)
    port = free_port()
    server = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (tmp_path / "sweeps.db").exists():
            time.sleep(0.2)
        time.sleep(1.0)
        server = subprocess.Popen([sys.executable, "-m", "sweeper", "dashboard", "live", "--storage", url,
                                   "--port", str(port)], cwd=tmp_path, env=env, stdout=server_log,
                                  stderr=subprocess.STDOUT)
        studies: dict = {}
        while time.monotonic() < deadline:
            try:
                studies = get_json(f"http://127.0.0.1:{port}/api/studies")
                break
            except OSError:
                time.sleep(0.3)
        assert studies, (tmp_path / "server.log").read_text()
        [summary] = studies["study_summaries"]
        assert summary["study_name"] == "live"
        seen = []
        while sweep.poll() is None:  # read the study over HTTP while the sweep writes it
            seen.append(len(get_json(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")["trials"]))
            time.sleep(0.1)
        output = (tmp_path / "sweep.log").read_text()
        assert sweep.returncode == 0, output[-3000:]
        assert "database is locked" not in output
        assert len(seen) >= 3 and seen == sorted(seen)
        study = optuna.load_study(study_name="live", storage=url)
        assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 16
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")
        assert len(detail["trials"]) == len(study.trials)

        browser = _browser()
        if browser is None:
            if os.environ.get("SWEEPER_TEST_BROWSER"):
                pytest.fail("SWEEPER_TEST_BROWSER names no browser")
            return
        page = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000", "--dump-dom",
             f"http://127.0.0.1:{port}/dashboard/studies/{summary['study_id']}"],
            capture_output=True, text=True, timeout=120,
        )
        assert "live" in page.stdout
        assert str(len(study.trials)) in page.stdout
    finally:
        for proc in (sweep, server):
            if proc is not None and proc.poll() is None:
                proc.kill()
        sweep_log.close()
        server_log.close()
