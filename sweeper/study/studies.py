"""The study's lifecycle: create it, open it to resume or to read, compare a spec with the stored one.

Optuna only (no Ray): the readers (``show``, ``export``, ``report``, ``dashboard``) open
studies through here too.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any

import optuna

import sweeper
from sweeper.errors import InputError
from sweeper.study import record
from sweeper.study.samplers import make_sampler
from sweeper.study.storage import open_storage, redact, study_names

if TYPE_CHECKING:
    from sweeper.spec import Sweep


def ensure_new_study(name: str, url: str) -> None:
    """Refuse to create a study that exists: ``launch`` never overwrites or silently extends one.

    Raises:
        InputError: the study exists; the message names ``sweeper resume``.
    """
    if name in study_names(url):
        raise InputError(
            f"study: {name!r} already exists in {redact(url)}; continue it with "
            f"`sweeper resume {name}` or choose another name with --study"
        )


def load_study(url: str, name: str) -> optuna.Study:
    """Open study ``name`` for reading (an SQLite file read-only: nothing is written to it).

    Raises:
        InputError: no such study (the message lists the ones there), or the storage does not answer.
    """
    names = study_names(url, read_only=True)
    if name not in names:
        raise InputError(f"study: {name!r} does not exist in {redact(url)}; studies there: "
                         f"{', '.join(names) or 'none'}")
    return optuna.load_study(study_name=name, storage=open_storage(url, read_only=True))


def stored_spec(url: str, name: str) -> dict[str, Any]:
    """The spec stored with study ``name`` (as :meth:`sweeper.spec.Sweep.stored` wrote it),
    with ``storage`` set back to ``url`` (the stored one has its password redacted).

    Raises:
        InputError: no such study, or it was not created by sweeper.
    """
    names = study_names(url, read_only=True)
    if name not in names:
        raise InputError(f"study: {name!r} does not exist in {redact(url)}; "
                         f"studies there: {', '.join(names) or 'none'}")
    storage = open_storage(url, read_only=True)
    spec = record.stored_spec(storage.get_study_user_attrs(storage.get_study_id_from_name(name)))
    if spec is None:
        raise InputError(f"study: {name!r} in {redact(url)} was not created by sweeper (it has no stored spec)")
    return {**spec, "storage": url}


def code_version() -> str:
    """sweeper's version, plus the git commit of the working directory's checkout when there is one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"sweeper {sweeper.__version__}" + (f" (git {commit})" if commit else "")


def record_study_metadata(study: optuna.Study, spec: dict[str, Any]) -> None:
    """Store the validated spec (storage password redacted), versions and creation time with the study."""
    record.write_study_metadata(study, {**spec, "storage": redact(str(spec.get("storage", "")))},
                                sweeper.__version__, code_version())


def create_study(sweep: Sweep, concurrency: int, storage: optuna.storages.RDBStorage | None = None) -> optuna.Study:
    """Create the sweep's study, with its spec and versions stored.

    Raises:
        InputError: a study of that name exists in the storage (``launch`` does not
            overwrite one; resuming is the way to continue it).
    """
    url = sweep.spec.storage
    ensure_new_study(sweep.name, url)
    study = optuna.create_study(
        storage=storage or open_storage(url, pool_size=concurrency), study_name=sweep.name,
        directions=[m.goal for m in sweep.objectives], sampler=make_sampler(sweep, concurrency),
    )
    record_study_metadata(study, sweep.stored())
    return study


def load_study_to_resume(sweep: Sweep, concurrency: int,
                         storage: optuna.storages.RDBStorage | None = None) -> optuna.Study:
    """Open an existing study to continue it, with a sampler that does not replay its draws.

    Raises:
        InputError: the study does not exist in the storage.
    """
    from sweeper.spec import validate

    url = sweep.spec.storage
    if sweep.name not in study_names(url):
        raise InputError(f"study: {sweep.name!r} does not exist in {redact(url)}; start it with `sweeper launch`")
    storage = storage or open_storage(url, pool_size=concurrency)
    done = len(storage.get_all_trials(storage.get_study_id_from_name(sweep.name), deepcopy=False))
    # A seeded sampler would draw the first trials' parameters again: seed it past them.
    reseeded = validate({**sweep.stored(), "seed": sweep.spec.seed + done, "storage": url})
    return optuna.load_study(study_name=sweep.name, storage=storage, sampler=make_sampler(reseeded, concurrency))


def continues_study(sweep: Sweep, resume: bool) -> bool:
    """Whether ``sweeper launch`` continues the study (``--resume`` and it exists) or creates it.

    Raises:
        InputError: the study exists and ``resume`` is off, or it exists with another spec
            (one line per difference).
    """
    from sweeper.spec import spec_differences

    url = sweep.spec.storage
    if resume and sweep.name in study_names(url):
        differences = spec_differences(stored_spec(url, sweep.name), sweep.stored())
        if differences:
            raise InputError([f"study: {sweep.name!r} in {redact(url)} was started with another spec; "
                              "resume it with `sweeper resume` or make the file match:", *differences])
        return True
    ensure_new_study(sweep.name, url)  # before Ray starts: exit 2, nothing written
    return False
