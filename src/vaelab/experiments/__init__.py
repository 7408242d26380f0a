"""Many runs: one job runner, lanes of parallel trainings, sweeps and their worker."""
