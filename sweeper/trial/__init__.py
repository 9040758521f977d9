"""One trial, as it runs inside a Ray worker.

- ``trainable``: the Tune function that runs a trainer for one configuration and reports each epoch;
- ``program``: a W&B program (``program:``) or notebook function run as a trainer, through the
  ``_wandb_site`` stand-in for ``wandb``;
- ``processes``, ``_reaper``: a program's process group, its logs, and its cleanup on every exit;
- ``replay``: a population-based trial's schedule replayed step by step (``sweeper train``/``retrain``).

A trial never imports the engine or a display: it reports to Ray and nothing else.
"""
