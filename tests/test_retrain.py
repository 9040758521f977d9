"""`sweeper retrain`: train the chosen config on train+val with K seeds, test it, write it out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import trainers
from sweeper.retrain import predict, retrain
from trainers.base import DataConfig
from trainers.data import load_data

CONFIG = {
    "trainer": "cnn",
    "params": {"filters": [4, 8, 8, 8, 8], "dense_units": 16, "lr": 0.003, "batch_size": 64},
    "data": {"dataset": "digits", "image_size": 32, "val_fraction": 0.2, "seed": 0},
    "epochs": 2,
    "seed": 5,
    "provenance": {"study": "s", "trial": 3},
}


def test_retrain_writes_a_model_that_loads_back_and_consistent_metrics(tmp_path: Path) -> None:
    said: list[str] = []
    summary = retrain(CONFIG, tmp_path / "out", seeds=2, log=said.append)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.json", "model.pt", "report.html"]
    assert summary["evaluated_on"] == "val" and summary["trained_on"] == "train+val"
    assert any("no test split" in line and "were trained on" in line for line in said)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [run["seed"] for run in metrics["seeds"]] == [5, 6]
    for run in metrics["seeds"]:
        matrix = np.array(run["confusion_matrix"])
        assert run["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
        assert [c["support"] for c in run["per_class"].values()] == matrix.sum(axis=1).tolist()
        assert run["macro_f1"] == pytest.approx(np.mean([c["f1"] for c in run["per_class"].values()]))
        recall = np.diag(matrix) / matrix.sum(axis=1)
        assert [c["recall"] for c in run["per_class"].values()] == pytest.approx(recall.tolist())
    accuracies = [run["accuracy"] for run in metrics["seeds"]]
    assert metrics["accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert metrics["accuracy_std"] == pytest.approx(np.std(accuracies))
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["retrained_from"] == {"study": "s", "trial": 3} and saved["data"]["train_on_val"] is True

    model = trainers.load_model(out)  # the documented one call
    data = load_data(DataConfig("digits", image_size=32, val_fraction=0.2, seed=0))
    predicted = predict(model, data.val_x, torch.device("cpu"))
    first = np.array(metrics["seeds"][0]["confusion_matrix"])
    rebuilt = np.zeros_like(first)
    np.add.at(rebuilt, (data.val_y.numpy(), predicted), 1)
    assert (rebuilt == first).all()  # the saved weights are the first seed's
    page = (out / "report.html").read_text()
    assert "Confusion matrix" in page and page.count("<figure>") == min(48, int(first.sum() - np.trace(first)))


def test_keep_val_holds_the_validation_images_out(tmp_path: Path) -> None:
    said: list[str] = []
    summary = retrain(CONFIG, tmp_path / "kept", epochs=1, keep_val=True, log=said.append)
    assert summary["trained_on"] == "train" and summary["evaluated_on"] == "val"
    assert not any("were trained on" in line for line in said)
