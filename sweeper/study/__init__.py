"""The Optuna study: what a sweep leaves behind, and what every reader reads.

- ``record``: the one module that names the study's attribute keys (curves, origins, counts);
- ``storage``: opening SQLite or PostgreSQL storage, with retries and redacted URLs;
- ``studies``: creating, loading and resuming a study from its stored spec;
- ``coordination``: driver leases and the study lock when several drivers share a study;
- ``samplers``, ``duplicates``, ``constraints``, ``pareto``: what the searcher and the readers
  share (the sampler, the duplicate check, outcome constraints, Pareto fronts);
- ``warm_start``: trials copied from earlier studies;
- ``results``: the ranked trials, ``show`` and ``export``.

No module here imports Ray (a contract in ``.importlinter``): a reader of a study needs no cluster.
"""
