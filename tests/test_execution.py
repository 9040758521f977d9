"""Real sweeps through local Ray Tune, recorded in real SQLite studies.

The CNN sweep trains on scikit-learn's bundled digits; the orchestration sweeps use
``tests.fake_trainers`` (real trainer functions whose curves are known in advance).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.engine.launch import run_sweep
from sweeper.spec import validate
from sweeper.study.record import GRID_ID as GRID_ID_ATTR
from sweeper.study.record import is_duplicate_draw

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def sweep_of(tmp_path: Path, name: str, **spec: Any) -> Any:
    return validate({"name": name, "storage": f"sqlite:///{tmp_path / 'study.db'}", "max_concurrent_trials": 2,
                     "artifacts": str(tmp_path / "artifacts"), **spec})


def load(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'study.db'}")


def test_cnn_sweep_with_asha_records_complete_and_pruned_trials(tmp_path: Path, study_name: str) -> None:
    sweep = sweep_of(
        tmp_path, study_name, method="random", run_cap=8, trainer="cnn", epochs=4, seed=3,
        data={"dataset": "digits", "image_size": 32},
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
        parameters={"filters": {"value": [4, 8, 8, 8, 8]}, "dense_units": {"value": 16},
                    "batch_size": {"value": 64}, "lr": {"values": [0.00001, 0.003]},
                    # 8 configurations for the 8 trials: no configuration runs twice.
                    "dropout": {"values": [0.0, 0.01, 0.02, 0.03]}},
    )
    outcome = run_sweep(sweep)
    study = load(tmp_path, study_name)  # read back as any Optuna user would
    trials = [t for t in study.get_trials() if not is_duplicate_draw(t)]
    states = [t.state for t in trials]
    assert outcome.finished == 8 and len(trials) == 8
    assert len({(t.params["lr"], t.params["dropout"]) for t in trials}) == 8
    assert states.count(TrialState.COMPLETE) >= 1 and states.count(TrialState.PRUNED) >= 1, states
    assert study.user_attrs["sweeper_spec"]["name"] == study_name
    assert "sweeper" in study.user_attrs["code_version"]
    for t in trials:
        curve = t.intermediate_values
        assert sorted(curve) == list(range(1, len(curve) + 1))
        assert t.value == curve[max(curve)]  # the last epoch's val_accuracy, never a partial run as COMPLETE
        assert t.user_attrs["epochs_run"] == len(curve)
        if t.state == TrialState.COMPLETE:
            assert len(curve) == 4
        else:
            assert 1 <= len(curve) < 4
        for key in ("wall_s", "ray_trial_id", "node", "worker", "device", "config"):
            assert key in t.user_attrs, key
        assert t.user_attrs["device"] == "cpu"
        assert [row["epoch"] for row in t.user_attrs["history"]] == list(range(1, len(curve) + 1))
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(t.user_attrs["history"][0])
        assert t.user_attrs["config"]["params"]["lr"] == t.params["lr"]
    # Checkpoints: only the best COMPLETE trial's are kept (keep_checkpoints: 1), and of it only the
    # last epoch's (each epoch's checkpoint replaced the one before).
    kept = list((tmp_path / "artifacts").rglob("checkpoint_*"))
    assert {p.parent.name for p in kept} == {f"trial_{study.best_trial.number}"} and len(kept) == 1
    # Actors are reused: 8 trials ran in at most 2 worker processes (each decoded the data once).
    assert len({t.user_attrs["worker"] for t in trials}) <= 2
    # ASHA stops the trials that learn nothing: no lr=1e-5 trial ran all 4 epochs after an lr=3e-3 one did.
    good = [t for t in trials if t.params["lr"] == 0.003]
    assert max(t.value for t in good if t.value is not None) > 0.5


def test_failed_trials_are_fail_with_their_message_and_do_not_count(tmp_path: Path, study_name: str) -> None:
    sweep = sweep_of(
        tmp_path, study_name, method="random", run_cap=4, trainer="tests.fake_trainers:CURVE", epochs=3,
        max_failed_trials=20, seed=2, metric={"name": "val_accuracy", "goal": "maximize"},
        parameters={"fail": {"values": [True, False], "probabilities": [0.5, 0.5]},
                    "lr": {"min": 0.001, "max": 0.02}},
    )
    outcome = run_sweep(sweep)
    trials = load(tmp_path, study_name).get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert outcome.finished == 4 and outcome.ending is None
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4  # the budget counts finished trials only
    assert failed and all(t.params["fail"] for t in failed)
    for t in failed:
        assert t.user_attrs["fail_reason"] == "FloatingPointError: loss became NaN at epoch 2"
        assert list(t.intermediate_values) == [1]  # its curve up to the failure is kept
        assert t.value is None


def test_failure_budget_stops_the_sweep(tmp_path: Path, study_name: str) -> None:
    sweep = sweep_of(tmp_path, study_name, method="random", run_cap=5, trainer="tests.fake_trainers:CURVE",
                     epochs=3, max_failed_trials=2, parameters={"fail": {"value": True}})
    outcome = run_sweep(sweep)
    assert outcome.ending is not None and outcome.ending.kind == "failures"
    assert "more than max_failed_trials (2)" in outcome.ending.reason
    trials = load(tmp_path, study_name).get_trials()
    assert all(t.state == TrialState.FAIL for t in trials)
    assert 3 <= len(trials) <= 4  # the third failure stops asking; one more may have been running


def test_grid_runs_every_point_exactly_once(tmp_path: Path, study_name: str) -> None:
    sweep = sweep_of(
        tmp_path, study_name, method="grid", trainer="tests.fake_trainers:CURVE", epochs=2,
        parameters={"lr": {"values": [0.001, 0.002, 0.003]}, "sleep_s": {"values": [0.01, 0.03]}},
    )
    assert sweep.budget == 6
    run_sweep(sweep)
    trials = load(tmp_path, study_name).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert sorted(t.user_attrs[GRID_ID_ATTR] for t in trials) == list(range(6))
    points = {(t.params["lr"], t.params["sleep_s"]) for t in trials}
    assert len(points) == 6


def test_a_second_launch_of_the_same_study_is_refused(tmp_path: Path, study_name: str) -> None:
    from sweeper.errors import InputError

    sweep = sweep_of(tmp_path, study_name, method="random", run_cap=1, trainer="tests.fake_trainers:CURVE",
                     epochs=1)
    run_sweep(sweep)
    with pytest.raises(InputError, match="sweeper resume"):
        run_sweep(sweep)
    assert len(load(tmp_path, study_name).trials) == 1


@pytest.mark.gpu
def test_fractional_gpu_trials_run_on_the_assigned_device(tmp_path: Path, study_name: str) -> None:
    """Two trials share one GPU (0.5 each); each trains on the CUDA device Ray assigned."""
    sweep = sweep_of(
        tmp_path, study_name, method="random", run_cap=4, trainer="cnn", epochs=2,
        data={"dataset": "digits", "image_size": 32}, resources_per_trial={"cpu": 1, "gpu": 0.5},
        parameters={"filters": {"value": [8, 8, 8, 8, 8]}, "lr": {"min": 0.001, "max": 0.003}},
    )
    run_sweep(sweep)
    trials = load(tmp_path, study_name).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert all(t.user_attrs["device"].startswith("cuda") for t in trials)


def test_imagefolder_sweep_skips_bad_files(tmp_path: Path, study_name: str, mnist_pngs: Path) -> None:
    """A sweep on an image folder with a corrupt PNG and a text file: both skipped, trials complete."""
    sweep = sweep_of(
        tmp_path, study_name, method="random", run_cap=2, trainer="cnn", epochs=2,
        data={"dataset": "imagefolder", "root": str(mnist_pngs), "image_size": 32},
        parameters={"filters": {"value": [4, 8, 8, 8, 8]}, "dense_units": {"value": 16},
                    "augment": {"values": [True, False]}, "batch_size": {"value": 16}},
    )
    run_sweep(sweep)
    trials = [t for t in load(tmp_path, study_name).get_trials() if not is_duplicate_draw(t)]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert {t.params["augment"] for t in trials} == {True, False}  # each configuration once
    assert all(len(t.intermediate_values) == 2 for t in trials)


def test_each_node_decodes_the_image_folder_while_the_driver_prepares(tmp_path: Path, study_name: str,
                                                                      mnist_pngs: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """sweeper.engine.cluster.warm_data_cache: a Ray task fills the data cache of a node with a CPU to
    spare before the first trial needs it (so a trial maps the folder and reads its split instead
    of decoding and splitting); nothing to warm for a bundled dataset, or with SWEEPER_WARM_CACHE=0."""
    import ray

    from sweeper.engine.cluster import warm_data_cache
    from trainers.cache import cached_image_folder

    cache = tmp_path / "cache"
    sweep = sweep_of(tmp_path, study_name, method="random", run_cap=1, trainer="cnn", epochs=1,
                     data={"dataset": "imagefolder", "root": str(mnist_pngs), "image_size": 32,
                           "cache_dir": str(cache)},
                     parameters={"filters": {"value": [4, 8, 8, 8, 8]}})
    assert not cache.exists()
    assert warm_data_cache(sweep, concurrency=2) == []  # 2 one-CPU trials leave this 2-CPU node no CPU to spare
    [ref] = warm_data_cache(sweep, concurrency=1)  # one alive node, one CPU to spare
    ray.get(ref, timeout=120)
    [folder] = [meta.parent for meta in cache.glob("*/meta.json")]
    assert folder.parent == cache and (folder / "meta.json").is_file()
    served = cached_image_folder(str(mnist_pngs), 32, cache)  # what the first trial then gets
    assert not served.built and served.folder == folder and served.images.shape == (90, 3, 32, 32)
    assert (folder / "split-v1-0.2-0.npz").is_file()  # the train/validation split, kept for every trial
    monkeypatch.setenv("SWEEPER_WARM_CACHE", "1")
    assert len(warm_data_cache(sweep, concurrency=2)) == 1
    monkeypatch.setenv("SWEEPER_WARM_CACHE", "0")
    assert warm_data_cache(sweep, concurrency=1) == []
    monkeypatch.delenv("SWEEPER_WARM_CACHE")
    bundled = sweep_of(tmp_path, study_name + "-b", method="random", run_cap=1, trainer="cnn", epochs=1,
                       data={"dataset": "digits", "image_size": 32}, parameters={"filters": {"value": [4, 8, 8, 8, 8]}})
    assert warm_data_cache(bundled, concurrency=1) == []


def test_a_data_root_that_vanishes_fails_trials_clearly(tmp_path: Path, study_name: str, mnist_pngs: Path) -> None:
    """Validated, then deleted before the trials load it: each trial FAILs saying so, and the
    failure budget ends the sweep (no hang)."""
    import shutil

    root = tmp_path / "photos"
    shutil.copytree(mnist_pngs, root)
    sweep = sweep_of(tmp_path, study_name, method="random", run_cap=3, trainer="cnn", epochs=1,
                     max_failed_trials=1, data={"dataset": "imagefolder", "root": str(root), "image_size": 32},
                     parameters={"filters": {"value": [4, 8, 8, 8, 8]}})
    shutil.rmtree(root)
    outcome = run_sweep(sweep)
    assert outcome.ending is not None and outcome.ending.kind == "failures"
    assert "max_failed_trials (1)" in outcome.ending.reason
    trials = load(tmp_path, study_name).get_trials()
    assert trials and all(t.state == TrialState.FAIL for t in trials)
    assert all(t.user_attrs["fail_reason"] == f"DataError: data.root: folder {str(root)!r} does not exist"
               for t in trials)


def test_early_stopping_and_k_fold_through_a_sweep(tmp_path: Path, study_name: str) -> None:
    """A trial its trainer stops early (patience) is COMPLETE with its best epoch's value; a
    k-fold trial keeps each fold's curve in the study; `monitor` follows the sweep's metric."""
    sweep = sweep_of(
        tmp_path, study_name, method="grid", trainer="cnn", epochs=6, seed=0,
        metric={"name": "val_loss", "goal": "minimize"},
        data={"dataset": "digits", "image_size": 32},
        parameters={"filters": {"value": [4, 8, 8, 8, 8]}, "dense_units": {"value": 16}, "batch_size": {"value": 128},
                    "lr": {"value": 1e-7}, "patience": {"value": 2}, "min_delta": {"value": 0.01},
                    "folds": {"values": [1, 2]}},
    )
    run_sweep(sweep)
    trials = sorted(load(tmp_path, study_name).get_trials(), key=lambda t: t.params["folds"])
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        history = t.user_attrs["history"]
        assert t.user_attrs["config"]["params"]["monitor"] == "val_loss"
        assert t.user_attrs["epochs_run"] == 3 and history[-1]["early_stopped"] == 1.0  # lr 1e-7: no progress
        best = int(history[-1]["best_epoch"])
        assert best == 1 and t.value == history[0]["val_loss"]  # no later epoch beat it by min_delta
    folds = trials[1].user_attrs["history"]
    assert all({"fold1_val_accuracy", "fold2_val_loss", "lr", "epoch_s"} <= set(row) for row in folds)
    assert folds[0]["val_loss"] == pytest.approx((folds[0]["fold1_val_loss"] + folds[0]["fold2_val_loss"]) / 2)


def test_tunes_next_trial_is_rays_choice_made_among_live_trials_only() -> None:
    """sweeper's schedulers pick the trial Tune starts next as Ray's FIFOScheduler does (the first
    PENDING trial in Tune's order, else the first PAUSED one) through a long run of status changes,
    while the trials they look through are only those not yet ended: Ray's own scan reads every
    trial of the experiment at every step (benchmarks/scale.py)."""
    import random

    from ray.tune.experiment import Trial
    from ray.tune.schedulers import FIFOScheduler

    from sweeper.engine.scheduler import Fifo, RecordingASHA

    class Controller:  # what a scheduler reads of Tune's controller to choose: its trials, in order
        def __init__(self) -> None:
            self.trials: list[Trial] = []

        def get_trials(self) -> list[Trial]:
            return self.trials

    # A trial's statuses as Tune moves them. A lost worker's trial goes back to PENDING at the end
    # of Tune's list and is added to the scheduler again (TuneController._requeue_trial).
    moves = {Trial.PENDING: [Trial.RUNNING],
             Trial.RUNNING: [Trial.PAUSED, Trial.TERMINATED, Trial.ERROR, "requeued"],
             Trial.PAUSED: [Trial.RUNNING, Trial.TERMINATED]}
    rng = random.Random(0)
    for ours in (Fifo(), RecordingASHA(time_attr="epoch", metric="m", mode="max", max_t=4, grace_period=1)):
        controller = Controller()
        for i in range(400):
            trial = Trial("stub", stub=True, trial_id=f"t{i}")
            controller.trials.append(trial)
            ours.on_trial_add(controller, trial)
            for _ in range(3):
                live = [t for t in controller.trials if t.status in moves]
                if live:
                    moved = rng.choice(live)
                    status = rng.choice(moves[moved.status])
                    if status == "requeued":
                        moved.set_status(Trial.PENDING)
                        controller.trials.remove(moved)
                        controller.trials.append(moved)
                        ours.on_trial_add(controller, moved)
                    else:
                        moved.set_status(status)
            assert ours.choose_trial_to_run(controller) is FIFOScheduler().choose_trial_to_run(controller)  # type: ignore[arg-type]
        ended = [t for t in controller.trials if t.status in (Trial.TERMINATED, Trial.ERROR)]
        assert len(ended) > 250
        assert len(ours._live) == len(controller.trials) - len(ended)
