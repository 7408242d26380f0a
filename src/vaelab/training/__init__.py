"""Training a run: the loop, its processes and devices, snapshots, schedules, optimizers, limits."""
