"""A training script as W&B users write them: argparse flags, wandb.init(), wandb.config, wandb.log.

It trains a small PyTorch CNN on scikit-learn's 1,797 bundled 8x8 digits (no download) and logs
``val_acc`` and ``val_loss`` after each epoch. Run it alone (``python train.py --lr=0.01``), under
``wandb agent``, or under ``sweeper launch sweep.yaml`` from this folder, unchanged.
"""

import argparse

import torch
import torch.nn.functional as F
import wandb
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--num_filters", type=int, default=16)
    parser.add_argument("--dense_neurons", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args()

    run = wandb.init(project="digits-cnn", config=vars(args))
    config = wandb.config
    torch.manual_seed(0)
    torch.set_num_threads(1)

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    train_idx, val_idx = train_test_split(range(len(y)), test_size=0.25, stratify=y.numpy(), random_state=0)
    x_train, y_train, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]

    model = nn.Sequential(
        nn.Conv2d(1, config.num_filters, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(config.num_filters * 16, config.dense_neurons), nn.ReLU(),
        nn.Linear(config.dense_neurons, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(y_train))
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = F.cross_entropy(logits, y_val).item()
            val_acc = (logits.argmax(1) == y_val).float().mean().item()
        wandb.log({"epoch": epoch, "val_acc": val_acc, "val_loss": val_loss, "train/loss": loss.item()})
    run.finish()


if __name__ == "__main__":
    main()
