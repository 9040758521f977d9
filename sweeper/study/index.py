"""A driver's running index of its study: what each ask needs, read at a cost that does not grow
with the study.

Each ask must know how many trials of the sweep have finished and run (every driver's), which
grid points those were, and every configuration that finished, runs or is queued (the duplicate
check). Reading the whole study for that at every ask cost time in proportion to its trials:
39 ms of a 92 ms ask at 10,000 trials, and 111 ms per trial late in a 10,000-trial sweep
against 52 ms at 1,000 (benchmarks/RESULTS.md, "Cost per trial at scale", before and after
this index). A finished trial never changes, so :class:`TrialIndex` reads each one once and
folds it into running totals; an ask then reads only the trials that are new or were unfinished
at the last read, as Optuna's own trial cache (``optuna.storages._CachedStorage``) does.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper.study import record
from sweeper.study.storage import trials_since

OPEN = (TrialState.RUNNING, TrialState.WAITING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class TrialIndex:
    """The study's trials as the searcher needs them, kept current by :meth:`refresh`.

    Attributes:
        finished: COMPLETE + PRUNED trials that ran in this study (:func:`~sweeper.study.record.ran_here`;
            warm-start copies and duplicate draws left out), every driver's.
        done_points: grid ids of those.
        finished_keys: configuration key → trial number of every COMPLETE or PRUNED trial,
            warm-start copies included (their configurations have run).
        open: storage trial id → the trial as last read, for trials RUNNING or WAITING then.

    Args:
        storage: the study's RDB storage.
        study: the study.
        key_of: a configuration's key, from a trial's parameters (see
            :func:`sweeper.study.duplicates.config_key`).
    """

    def __init__(self, storage: optuna.storages.RDBStorage, study: optuna.Study,
                 key_of: Callable[[Mapping[str, Any]], str]):
        self.storage, self.key_of = storage, key_of
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.reset()

    def reset(self) -> None:
        """Forget what was read: the next :meth:`refresh` reads the whole study. The searcher calls
        it every ``REAP_S`` seconds on a server database: there a trial another driver adds
        outside the study lock (its Ctrl-C's retries) may commit after a trial with a higher id
        was read, and the incremental reads alone would never see it. SQLite commits one writer
        at a time, in the order of the ids, so it needs none."""
        self.finished = 0
        self.done_points: set[int] = set()
        self.finished_keys: dict[str, int] = {}
        self.open: dict[int, FrozenTrial] = {}
        self._read_up_to = -1  # every trial id up to this one has been read at least once

    def refresh(self) -> None:
        """Read the trials created since the last read and those that were open then; fold each
        newly finished one into the totals (once: a finished trial never changes)."""
        for trial in trials_since(self.storage, self.study_id, set(self.open), self._read_up_to):
            if trial.state in OPEN:
                self.open[trial._trial_id] = trial
            else:
                self.open.pop(trial._trial_id, None)
                if trial.state in FINISHED:
                    self.finished_keys[self.key_of(trial.params)] = trial.number
                    if record.ran_here(trial):
                        self.finished += 1
                        if (gid := record.grid_id_of(trial)) is not None:
                            self.done_points.add(gid)
            self._read_up_to = max(self._read_up_to, trial._trial_id)  # once it is taken in

    def running(self) -> list[FrozenTrial]:
        """The RUNNING trials that ran in this study, as of the last :meth:`refresh`."""
        return [t for t in self.open.values() if t.state == TrialState.RUNNING and record.ran_here(t)]

    def waiting(self) -> list[FrozenTrial]:
        """The WAITING (queued) trials, as of the last :meth:`refresh`."""
        return [t for t in self.open.values() if t.state == TrialState.WAITING]

    def seen(self) -> Mapping[str, int]:
        """Configuration key → trial number of every trial finished (COMPLETE, PRUNED), running or
        queued, as of the last :meth:`refresh`; an open trial's number wins over a finished one's.

        A view, not a copy: building it, and its ``len``, cost the open trials only, whatever the
        study's size (a copy of the finished keys at each ask grew with the study)."""
        return _Seen({self.key_of(params_of(t)): t.number for t in self.open.values()}, self.finished_keys)


def params_of(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's parameters; for a queued (WAITING) trial, those it was queued with (Optuna keeps
    them in its ``fixed_params`` system attribute until the trial is asked)."""
    return dict(trial.params) if trial.state != TrialState.WAITING else dict(trial.system_attrs.get("fixed_params", {}))


class _Seen(ChainMap[str, int]):
    """The open trials' keys over the finished ones (:meth:`TrialIndex.seen`); ``len`` counts the
    finished keys and the open ones not among them, not a union of every key (ChainMap's)."""

    def __len__(self) -> int:
        open_keys, finished = self.maps
        return len(finished) + sum(key not in finished for key in open_keys)
