"""A tabular benchmark of real learning curves (NAS-Bench-201's method, Dong & Yang 2020): every
configuration of a finite grid of the ``cnn`` trainer's space trained on cifar10-5k for 27 epochs,
one row per (configuration, seed, epoch) in ``cnn_cifar10.csv.gz``. ``record`` makes the table;
``table`` reads it; ``benchmarks.simulate`` replays it on a simulated clock."""
