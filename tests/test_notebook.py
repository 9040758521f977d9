"""The example notebook (examples/wandb_sweep.ipynb) executed headless in a real Jupyter kernel
(nbclient, ipykernel) on real digits: the W&B flow with the two calls renamed, its trials,
a second agent call, and a kernel interrupt that leaves no process and resumes."""

from __future__ import annotations

import ast
import asyncio
import io
import os
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "wandb_sweep.ipynb"

# Appended by the test, run in the same kernel: a slower W&B function that writes its pid, then
# the agent call the test interrupts, then the call that resumes.
_SLOW = '''
import os, time
def slow_train():
    import wandb
    run = wandb.init()
    with open(PIDS, "a") as f:
        f.write(f"{os.getpid()}\\n")
    for epoch in range(1, wandb.config.epochs + 1):
        time.sleep(1.5)
        wandb.log({"val_accuracy": 0.5})
    run.finish()
sweeper.agent(sweep_id, function=slow_train, count=4)
'''


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cell_index(nb: object, text: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and text in c.source)  # type: ignore[attr-defined]


def test_the_notebooks_train_is_a_plain_wandb_function() -> None:
    """`train()` imports nothing of sweeper (nor of its trainers): a W&B user's function as it is."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    source = nb.cells[_cell_index(nb, "def train():")].source
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "wandb" in imported and not imported & {"sweeper", "trainers"}
    assert not any(isinstance(n, ast.Name) and n.id == "sweeper" for n in ast.walk(tree))
    calls = "".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "sweeper.sweep(sweep_config" in calls and "sweeper.agent(sweep_id, function=train, count=" in calls
    assert all(c.outputs for c in nb.cells if c.cell_type == "code" and "sweep" in c.source.splitlines()[-1]), \
        "the stored notebook keeps its outputs"
    figures = [o.data for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert figures and all(data.get("image/png", "").startswith("iVBORw0KGgo") for data in figures), \
        "each stored Plotly figure has a PNG beside it (GitHub draws no Plotly JSON): examples/store_figures.py"


def test_store_figures_draws_a_notebooks_plotly_figure_offline(tmp_path: Path) -> None:
    """examples/store_figures.py adds a PNG of the figure, drawn by headless Chromium, beside its
    JSON; the PNG's size is the figure's (Chromium present here; CI names it, and then it fails
    rather than skips without one)."""
    import base64
    import struct

    import plotly.graph_objects as go

    from examples.store_figures import PLOTLY, browser_path, store_figures

    browser = browser_path(os.environ.get("SWEEPER_TEST_BROWSER"))
    if browser is None:
        if os.environ.get("SWEEPER_TEST_BROWSER"):
            pytest.fail("SWEEPER_TEST_BROWSER names no executable browser")
        pytest.skip("no chromium to draw in")
    assert browser_path(str(tmp_path / "no-such-browser")) is None
    figure = go.Figure(go.Scatter(x=[1, 2, 3], y=[0.5, 0.6, 0.7]), layout={"width": 400, "height": 300})
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fig", outputs=[nbformat.v4.new_output(
        "display_data", data={PLOTLY: figure.to_plotly_json(), "text/plain": "Figure"})])])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert store_figures(path, browser) == 1
    data = nbformat.read(path, as_version=4).cells[0].outputs[0].data
    png = base64.b64decode(data["image/png"])
    width, height = struct.unpack(">II", png[16:24])  # the PNG's IHDR
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (width, height) == (416, 316) and PLOTLY in data
    from PIL import Image

    colours = Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=1 << 16) or []
    assert len(colours) > 20  # a drawn figure (axes, grid, the line, text), not a blank page


@pytest.mark.slow
def test_the_example_notebook_runs_in_a_kernel_and_an_interrupt_resumes(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    pids = tmp_path / "pids.txt"
    nb.cells.append(nbformat.v4.new_code_cell(f"PIDS = {str(pids)!r}\n" + _SLOW))
    nb.cells.append(nbformat.v4.new_code_cell("resumed = sweeper.agent(sweep_id, function=train, count=1)"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(tmp_path)}})
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    first, second = _cell_index(nb, "count=4)"), _cell_index(nb, "count=2)")
    slow = len(nb.cells) - 2

    def finished() -> list[optuna.trial.FrozenTrial]:
        study = optuna.load_study(study_name="inat_cnn", storage=url)
        return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]

    with client.setup_kernel(env=env):
        kernel = psutil.Process(client.km.provisioner.process.pid)  # type: ignore[union-attr]
        for index in range(slow):
            client.execute_cell(nb.cells[index], index)
            if index == first:
                assert len(finished()) == 4
            if index == second:
                assert len(finished()) == 6  # the second call added its count

        def interrupt() -> None:  # once a slow trial runs, the kernel's interrupt (SIGINT), as Jupyter's button
            deadline = time.time() + 300
            while time.time() < deadline and not (pids.exists() and pids.read_text().strip()):
                time.sleep(0.2)
            time.sleep(1.0)
            asyncio.run(client.km.interrupt_kernel())  # type: ignore[union-attr]

        watcher = threading.Thread(target=interrupt, daemon=True)
        watcher.start()
        with pytest.raises(nbclient.exceptions.CellExecutionError, match="KeyboardInterrupt"):
            client.execute_cell(nb.cells[slow], slow)
        watcher.join(timeout=10)
        trial_pids = [int(p) for p in pids.read_text().split()]
        deadline = time.time() + 60
        while time.time() < deadline and any(_pid_alive(p) for p in trial_pids):
            time.sleep(0.5)
        assert not any(_pid_alive(p) for p in trial_pids), "an interrupted trial's process is still running"
        study = optuna.load_study(study_name="inat_cnn", storage=url)
        interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
        assert interrupted and all("interrupted" in t.user_attrs["fail_reason"] for t in interrupted)
        assert not [t for t in study.trials if t.state == TrialState.RUNNING]
        before = len(finished())
        client.execute_cell(nb.cells[slow + 1], slow + 1)  # the next call resumes the study
        assert len(finished()) == before + 1
        family = [kernel, *kernel.children(recursive=True)]
    deadline = time.time() + 60
    while time.time() < deadline and any(_pid_alive(p.pid) for p in family):
        time.sleep(0.5)
    assert not [p.pid for p in family if _pid_alive(p.pid)], "the kernel left processes behind"

    trials = finished()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert complete and pruned
    assert all(len(t.intermediate_values) == 4 for t in complete)
    assert all(1 <= len(t.intermediate_values) < 4 for t in pruned)
    assert all(t.user_attrs["history"][-1]["train_loss"] >= 0 for t in trials)
    for index in (first, second):  # one progress display per agent call, no scroll of trial lines
        outputs = nb.cells[index].outputs
        displays = [o for o in outputs if o.output_type == "display_data"
                    and "inat_cnn</span>: random search" in o.data.get("text/html", "")]
        assert len(displays) == 1 and "finished" in displays[0].data["text/html"]
        streams = "".join(o.text for o in outputs if o.output_type == "stream")
        assert "COMPLETE" not in streams and "\x1b[" not in streams
