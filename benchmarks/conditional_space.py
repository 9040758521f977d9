"""A conditional, deduplicated search space vs the same space flattened (W&B's way), in epochs.

The 5-block CNN on real photos (CIFAR-10, ``../shared/data/cifar10-5k/train``, 32x32, 20% held out)
with an all-categorical space: ``optimizer`` (adam, sgd) with ``momentum`` (0.8, 0.9, 0.95) for
SGD only, ``lr_schedule`` (none, cosine) with ``warmup_epochs`` (0, 1, 2) for cosine only,
``filters`` (two widths) and ``lr`` (two rates): 64 distinct trainings. Flattened, as a W&B file
must write it, the same space is 144 configurations, of which many train identically (Adam
ignores ``momentum``; no schedule ignores ``warmup_epochs``). Both run TPE (``bayes``), 16 trials
of 4 epochs, 2 at a time, no early stopping, for each seed: the conditional one with ``when:`` and
sweeper's duplicate check, the flattened one without ``when:`` (sweeper's check then only sees
identical raw configurations, not the dead parameters).

For each seed the target is the lower of the two sweeps' best ``val_accuracy`` (both reach it);
a sweep's cost is the epochs it had trained, all trials together, in the order trials finished,
when a finished trial first reached the target. Also counted: the flattened sweep's trials whose
training repeated an earlier one (the same configuration once dead parameters are dropped).

Usage: ``python -m benchmarks.conditional_space [--seeds 0 1 2] [--data PATH]``; writes its
section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import optuna

from benchmarks._results import CIFAR_5K, machine, start, write_section
from benchmarks.search_efficiency import epochs_to_reach

DATA = CIFAR_5K / "train"
CONDITIONAL = {
    "optimizer": {"values": ["adam", "sgd"]},
    "momentum": {"values": [0.8, 0.9, 0.95], "when": {"optimizer": "sgd"}},
    "lr_schedule": {"values": ["none", "cosine"]},
    "warmup_epochs": {"values": [0, 1, 2], "when": {"lr_schedule": "cosine"}},
    "filters": {"values": [[8, 16, 32, 32, 32], [16, 32, 64, 64, 64]]},
    "lr": {"values": [0.001, 0.003]},
}


def spec(name: str, seed: int, data: Path, tmp: Path, conditional: bool) -> dict[str, Any]:
    parameters = CONDITIONAL if conditional else {
        k: {key: v for key, v in p.items() if key != "when"} for k, p in CONDITIONAL.items()}
    return {"name": name, "method": "bayes", "seed": seed, "trainer": "cnn", "epochs": 4, "run_cap": 16,
            "data": {"dataset": "imagefolder", "root": str(data), "image_size": 32, "val_fraction": 0.2},
            "max_concurrent_trials": 2, "storage": f"sqlite:///{tmp / 'studies.db'}",
            "artifacts": str(tmp / "artifacts"), "keep_checkpoints": 0,
            "parameters": {**parameters, "batch_size": {"value": 128}}}


def effective(params: dict[str, Any]) -> str:
    """A trial's training once the parameters that do nothing are dropped."""
    live = dict(params)
    if live.get("optimizer") != "sgd":
        live.pop("momentum", None)
    if live.get("lr_schedule") != "cosine":
        live.pop("warmup_epochs", None)
    return json.dumps(live, sort_keys=True)


def run(raw: dict[str, Any]) -> tuple[list[tuple[int, float | None]], int]:
    """Run a sweep; its finished trials as ``(epochs, value)`` in the order they finished, and how
    many of them repeated an earlier trial's training."""
    from sweeper.engine.launch import run_sweep
    from sweeper.spec import validate

    run_sweep(validate(raw))
    study = optuna.load_study(study_name=raw["name"], storage=raw["storage"])
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    done.sort(key=lambda t: t.datetime_complete)  # type: ignore[arg-type,return-value]
    seen: set[str] = set()
    repeats = 0
    for t in done:
        key = effective(t.params)
        repeats += key in seen
        seen.add(key)
    return [(int(t.user_attrs["epochs_run"]), t.value) for t in done], repeats


def main() -> None:
    from sweeper.spec import validate

    args = start(__doc__.splitlines()[0], DATA)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        sizes = [validate(spec("size", 0, args.data, tmp, c)).space.size() for c in (True, False)]
        for seed in args.seeds:
            cond, cond_repeats = run(spec(f"conditional-{seed}", seed, args.data, tmp, True))
            flat, flat_repeats = run(spec(f"flattened-{seed}", seed, args.data, tmp, False))
            best_c, best_f = max(v for _, v in cond if v is not None), max(v for _, v in flat if v is not None)
            target = min(best_c, best_f)
            need_c, need_f = epochs_to_reach(cond, target), epochs_to_reach(flat, target)
            assert need_c is not None and need_f is not None
            rows.append((seed, best_c, best_f, target, need_c, need_f, cond_repeats, flat_repeats))
            print(rows[-1], flush=True)
    ratios = [r[4] / r[5] for r in rows]
    write_section(f"Conditional + deduplicated space vs flattened ({dt.date.today().isoformat()})", [
        f"Machine: {machine()}. Command: `python -m benchmarks.conditional_space --seeds "
        f"{' '.join(map(str, args.seeds))}`. The 5-block CNN on cifar10-5k/train (32x32, 20% validation), TPE, "
        f"16 trials of 4 epochs, 2 at a time; the space has {sizes[0]} distinct trainings with `when:` and "
        f"{sizes[1]} configurations flattened. Target = the lower of the two sweeps' best val_accuracy; cost = "
        "epochs trained by all trials until a finished trial first reached it. Repeats = trials whose training "
        "was an earlier trial's once dead parameters are dropped.",
        "",
        "| seed | best, conditional | best, flattened | target | epochs to target, conditional | epochs to target, "
        "flattened | ratio | repeats, conditional | repeats, flattened |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *[f"| {s} | {bc:.4f} | {bf:.4f} | {t:.4f} | {nc} | {nf} | {nc / nf:.2f} | {rc} | {rf} |"
          for s, bc, bf, t, nc, nf, rc, rf in rows],
        "",
        f"Mean ratio over seeds: {statistics.fmean(ratios):.2f} (median {statistics.median(ratios):.2f}); "
        f"repeated trainings: {sum(r[6] for r in rows)} conditional, {sum(r[7] for r in rows)} flattened, "
        f"of {16 * len(rows)} trials each.",
    ])


if __name__ == "__main__":
    main()
