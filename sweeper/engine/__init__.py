"""The engine: a validated sweep run as trials on Ray Tune, recorded in its study.

- ``launch``: the hub; opens the study, builds the Tune tuner, runs it and closes, as named steps;
- ``searcher``: the Optuna sampler as Ray Tune's searcher (draws, duplicate check, grid, warm start);
- ``scheduler``: ASHA (one objective) and multi-objective ASHA, recording their decisions;
- ``population``, ``pb2``: Ray's PBT and PB2, each member's schedule kept in the study (``pb2`` is
  imported only for a PB2 sweep: Ray's PB2 imports scikit-learn and SciPy);
- ``recorder``: a Tune callback writing each epoch's report into the study;
- ``ray_runtime``, ``cluster``: starting or joining Ray, per-node data caches;
- ``events``: the typed events the engine emits; it prints nothing (the views render them).

The engine imports no display (``sweeper.views``, ``rich``): a contract in ``.importlinter``.
"""
