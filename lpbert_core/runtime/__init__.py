"""Runtime: devices, ranks, GPU claims, signals and checkpoints, atomic writes, batch loading, how a stage runs."""
