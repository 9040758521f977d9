"""Give each Plotly figure stored in a notebook a PNG beside it, so that the notebook reads on GitHub.

Jupyter shows a Plotly figure from its JSON (``application/vnd.plotly.v1+json``), which GitHub's
notebook viewer does not draw: without a picture the cell reads as empty there. Plotly's own PNG
export needs kaleido and the Chrome it downloads; this draws each figure offline instead, in a
headless Chromium that is already installed: the figure's HTML with plotly.js inline
(:meth:`plotly.graph_objects.Figure.write_html`), screenshot at the figure's size. The PNG is
added to the same output, as ``image/png``; the JSON stays, so Jupyter still draws the live figure.

Usage, after running the notebook (``jupyter nbconvert --execute --inplace``)::

    python examples/store_figures.py examples/wandb_sweep.ipynb [--browser /usr/bin/chromium]

Exits 2 with one line when no browser is found or the notebook has no Plotly output.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PLOTLY = "application/vnd.plotly.v1+json"
WIDTH, HEIGHT = 900, 500  # pixels, when the figure's layout sets no size


def browser_path(given: str | None) -> str | None:
    """The Chromium to draw with: ``given``, else ``$SWEEPER_BROWSER``, else ``chromium`` on the
    PATH; ``None`` when the one named is not an executable there."""
    named = given or os.environ.get("SWEEPER_BROWSER")
    if named:
        return shutil.which(named)
    return shutil.which("chromium") or shutil.which("chromium-browser")


def figure_png(figure: dict[str, Any], browser: str) -> bytes:
    """The PNG of one Plotly figure (its JSON, as a notebook stores it), drawn offline by ``browser``.

    Raises:
        RuntimeError: the browser wrote no picture.
        subprocess.TimeoutExpired: the browser ran over 120 s.
    """
    import plotly.graph_objects as go

    fig = go.Figure(figure)
    width = int(fig.layout.width or WIDTH)
    height = int(fig.layout.height or HEIGHT)
    fig.update_layout(width=width, height=height)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        page, shot = tmp / "figure.html", tmp / "figure.png"
        fig.write_html(page, include_plotlyjs=True, full_html=True, config={"displayModeBar": False})
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp / 'profile'}",
             f"--window-size={width + 16},{height + 16}", "--virtual-time-budget=5000",
             f"--screenshot={shot}", page.as_uri()],
            capture_output=True, timeout=120, check=False, text=True)
        if not shot.is_file() or shot.stat().st_size == 0:
            last = done.stderr.strip().splitlines()[-1:] or ["(nothing on stderr)"]
            raise RuntimeError(f"{browser} wrote no picture of the figure: {last[0]}")
        return shot.read_bytes()


def store_figures(notebook: Path, browser: str) -> int:
    """Add a PNG to every Plotly output of ``notebook`` (rewritten in place); the figures drawn."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    drawn = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY in data:
                data["image/png"] = base64.b64encode(figure_png(dict(data[PLOTLY]), browser)).decode()
                drawn += 1
    if drawn:
        nbformat.write(nb, notebook)
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--browser", help="Chromium's path (else $SWEEPER_BROWSER, else chromium on the PATH)")
    args = parser.parse_args()
    browser = browser_path(args.browser)
    if browser is None:
        _fail(f"--browser: {args.browser or os.environ.get('SWEEPER_BROWSER') or 'chromium'} is not an executable "
              "(give Chromium's path, or install chromium)")
    try:
        drawn = store_figures(args.notebook, browser)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as err:
        _fail(f"notebook: {args.notebook}: {err}")
    if not drawn:
        _fail(f"notebook: {args.notebook} has no Plotly output to draw (run it first)")
    print(f"{args.notebook}: {drawn} figure(s) stored as PNG")


def _fail(line: str) -> None:
    """One line on stderr, exit 2."""
    print(f"error: {line}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
