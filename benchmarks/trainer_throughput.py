"""Trainer throughput: sweeper's training loop vs a plain hand-written PyTorch loop.

Same model (built by the trainer's own ``build``), same data (mnist5k, or the digits), same
batch size, optimiser and thread count; both evaluate on the validation split once per
epoch, as any training script does. Images per second = training images / epoch wall time,
the median over the epochs after the first (warm-up). The two run alternately, ``--rounds``
times each, so that the machine's drift hits both.

Usage: ``python -m benchmarks.trainer_throughput [--epochs 4] [--rounds 2]`` from the
repository root; writes its section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from typing import Any

import torch
from torch import nn

from benchmarks._results import machine, write_section
from trainers import get_trainer
from trainers.base import DataConfig, TrainConfig
from trainers.data import load_data
from trainers.device import resolve_device
from trainers.rng import seed_everything

CASES: list[tuple[str, str, dict[str, Any], DataConfig]] = [
    ("cnn [32]x5, dense 128, mnist5k 32 px", "cnn", {"filters": [32] * 5, "dense_units": 128},
     DataConfig("mnist5k", image_size=32)),
    ("torchvision resnet18, mnist5k 32 px", "torchvision", {"architecture": "resnet18"},
     DataConfig("mnist5k", image_size=32)),
]


def plain_loop(model: nn.Module, data_cfg: DataConfig, epochs: int, batch_size: int, lr: float,
               device: torch.device) -> list[float]:
    """The loop a user writes by hand: tensors in memory, Adam, cross-entropy, an eval pass per epoch."""
    data = load_data(data_cfg)
    x, y, vx, vy = data.train_x, data.train_y, data.val_x, data.val_y
    model[0].fit_to(x)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            if len(idx) < 2:
                continue
            xb, yb = x[idx].to(device), y[idx].to(device)
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = 0
            for i in range(0, len(vy), 512):
                correct += int((model(vx[i:i + 512].to(device)).argmax(1) == vy[i:i + 512].to(device)).sum())
        times.append(time.perf_counter() - started)
    return times


def sweeper_loop(trainer: str, params: dict[str, Any], data_cfg: DataConfig, epochs: int, threads: int) -> list[float]:
    times: list[float] = []
    get_trainer(trainer).fit(TrainConfig(params, data_cfg, epochs=epochs, seed=0, threads=threads),
                             lambda epoch, metrics, checkpoint=None: times.append(metrics["epoch_s"]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device("auto")
    rows = []
    for label, name, extra, data_cfg in CASES:
        trainer = get_trainer(name)
        params = {**trainer.defaults(), **extra, "batch_size": 128, "lr": 1e-3}
        n_train = len(load_data(data_cfg).train_idx)
        plain: list[float] = []
        ours: list[float] = []
        for _ in range(args.rounds):
            seed_everything(0)
            assert trainer.build is not None
            model = trainer.build(TrainConfig(params, data_cfg), load_data(data_cfg).channels, 10)
            plain += plain_loop(model, data_cfg, args.epochs, 128, 1e-3, device)[1:]
            ours += sweeper_loop(name, params, data_cfg, args.epochs, args.threads)[1:]
        plain_ips, ours_ips = n_train / statistics.median(plain), n_train / statistics.median(ours)
        rows.append((label, plain_ips, ours_ips))
        print(f"{label:<45} plain {plain_ips:8.0f} img/s  sweeper {ours_ips:8.0f} img/s  "
              f"{ours_ips / plain_ips:.3f}x", flush=True)
    write_section(f"Trainer throughput ({dt.date.today().isoformat()})", [
        f"Machine: {machine()}; device {device}, {args.threads} threads. "
        f"Command: `python -m benchmarks.trainer_throughput --epochs {args.epochs} --rounds {args.rounds}`. "
        "Training images per second, median of the epochs after the first, each epoch including one "
        "validation pass; batch 128, Adam, fp32, no augmentation. Target: sweeper >= 0.95x the plain loop.",
        "",
        "| model and data | plain PyTorch loop (img/s) | sweeper's trainer (img/s) | ratio |",
        "| --- | --- | --- | --- |",
        *[f"| {label} | {p:.0f} | {o:.0f} | {o / p:.3f} |" for label, p, o in rows],
    ])


if __name__ == "__main__":
    main()
