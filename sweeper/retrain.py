"""Retrain a chosen config and test it: what the seeds did by hand after every sweep.

The config (a study's best trial, or an exported file) is trained on train + validation
images (or on train alone with ``keep_val``) for K seeds, then evaluated on the test split;
without a test split, on the validation images, and the result says so. Written to a folder:
``model.pt`` (the first seed's state dict), ``config.yaml`` (what :func:`trainers.load_model`
reads), ``metrics.json`` and ``report.html`` (confusion matrix, misclassified images).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import html
import io
import json
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from sweeper.errors import InputError
from sweeper.spec import load_train_config
from sweeper.trial.replay import fit_scheduled
from trainers.data import load_data
from trainers.device import resolve_device


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    ``confusion_matrix[i][j]`` counts images of class ``i`` predicted as ``j``
    (scikit-learn's ``confusion_matrix`` and ``precision_recall_fscore_support``).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                                     zero_division=0)
    return {
        "accuracy": float((y_true == y_pred).mean()),
        "macro_f1": float(np.mean(f1)),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(classes)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def retrain(
    config: Mapping[str, Any],
    out_dir: Path,
    *,
    epochs: int | None = None,
    seeds: int = 1,
    keep_val: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``config`` (``sweeper export``'s format) ``seeds`` times and test it; write ``out_dir``.

    Returns:
        the metrics written to ``metrics.json``: per seed, and mean and standard deviation of
        accuracy and macro-F1 over the seeds, plus ``evaluated_on`` (``test`` or ``val``).

    Raises:
        InputError: the config is invalid, ``seeds`` is below 1, or its trainer cannot rebuild
            its model (no ``build``).
    """
    if seeds < 1:
        raise InputError(f"--seeds: {seeds} must be 1 or more")
    trainer, base = load_train_config(config, epochs=epochs)
    if trainer.build is None:
        raise InputError(f"trainer: {trainer.name!r} declares no build(); retrain needs one to rebuild its model")
    if int(base.params.get("folds", 1)) > 1:
        # k-fold scored the config during the sweep; the final model is one model on all the data.
        log(f"folds {base.params['folds']}: retraining one model (k-fold only scores a config)")
        base = dataclasses.replace(base, params={**base.params, "folds": 1})
    data_cfg = dataclasses.replace(base.data, train_on_val=not keep_val)
    data = load_data(data_cfg)
    plain = load_data(dataclasses.replace(data_cfg, train_on_val=False))
    evaluated_on = "test" if plain.test_x is not None else "val"
    if evaluated_on == "val":
        log("no test split in this data: evaluating on the validation images"
            + ("" if keep_val else ", which were trained on (use --keep-val to hold them out)"))
    runs = []
    first_state: dict[str, Any] | None = None
    first_pred = np.zeros(0, dtype=np.int64)
    for k in range(seeds):
        cfg = dataclasses.replace(base, data=data_cfg, seed=base.seed + k)
        last: dict[str, Any] = {}

        def report(epoch: int, metrics: Mapping[str, float], checkpoint: Mapping[str, Any] | None = None,
                   seed: int = cfg.seed, store: dict[str, Any] = last) -> None:
            log(f"seed {seed} epoch {epoch}/{base.epochs}  " + "  ".join(f"{n} {v:.4f}" for n, v in metrics.items()))
            if checkpoint is not None and "model" in checkpoint:
                store["model"] = copy.deepcopy(dict(checkpoint["model"]))

        fit_scheduled(trainer, cfg, config.get("schedule"), report)  # a PBT trial's schedule, replayed
        if "model" not in last:
            raise InputError(f"trainer: {trainer.name!r} reported no checkpoint with its model's state")
        model = trainer.build(cfg, data.channels, len(data.classes))
        model.load_state_dict(last["model"])
        y_pred = predict(model, data.val_x, resolve_device(cfg.device))
        runs.append({"seed": cfg.seed, **classification_metrics(data.val_y.numpy(), y_pred, list(data.classes))})
        if first_state is None:
            first_state, first_pred = last["model"], y_pred
    assert first_state is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(first_state, out_dir / "model.pt")
    saved = {**{k: v for k, v in config.items() if k != "provenance"}, "epochs": base.epochs,
             "data": {**dataclasses.asdict(data_cfg)}, "classes": list(data.classes), "channels": data.channels,
             "retrained_from": config.get("provenance")}
    (out_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    summary = {
        "evaluated_on": evaluated_on,
        "trained_on": "train" if keep_val else "train+val",
        "seeds": runs,
        **{f"{name}_{stat}": fn([r[name] for r in runs])
           for name in ("accuracy", "macro_f1")
           for stat, fn in (("mean", statistics.fmean), ("std", lambda xs: statistics.pstdev(xs) if len(xs) > 1
                                                                 else 0.0))},
    }
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "report.html").write_text(_page(runs[0], data.val_x, data.val_y.numpy(), first_pred,
                                               list(data.classes), evaluated_on), encoding="utf-8")
    return summary


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 512) -> np.ndarray:
    """Class indices predicted for uint8 ``images`` ``(N, C, S, S)``; shape ``(N,)``."""
    model.to(device).eval()
    out = [model(images[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def _page(run: Mapping[str, Any], images: torch.Tensor, y_true: np.ndarray, y_pred: np.ndarray,
          classes: list[str], split: str) -> str:
    import plotly.graph_objects as go
    import plotly.io as pio
    from PIL import Image

    matrix = go.Figure(go.Heatmap(z=run["confusion_matrix"], x=classes, y=classes, colorscale="Blues",
                                  text=run["confusion_matrix"], texttemplate="%{text}"))
    matrix.update_layout(title=f"Confusion matrix ({split} split)", xaxis_title="predicted", yaxis_title="true",
                         yaxis_autorange="reversed")
    cells = []
    for i in np.flatnonzero(y_true != y_pred)[:48]:
        arr = images[i].permute(1, 2, 0).numpy()
        img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).resize((96, 96))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        src = base64.b64encode(buf.getvalue()).decode()
        cells.append(f"<figure><img src='data:image/png;base64,{src}'><figcaption>true "
                     f"{html.escape(classes[y_true[i]])}<br>predicted {html.escape(classes[y_pred[i]])}"
                     "</figcaption></figure>")
    return "\n".join([
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>sweeper retrain</title><style>"
        "body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:4px;text-align:center;"
        "font-size:12px}</style></head><body>",
        f"<h1>Retrained model: accuracy {run['accuracy']:.4f}, macro-F1 {run['macro_f1']:.4f} ({split} split)</h1>",
        pio.to_html(matrix, include_plotlyjs=True, full_html=False),
        f"<h2>Misclassified images ({int((y_true != y_pred).sum())}, first 48)</h2>", *cells,
        "</body></html>",
    ])
