"""One training job, wherever it runs: `ensure_run` trains a configuration, resumes it, or reuses it.

`vaelab report` (its networks, one after the other or side by side in lanes) and `vaelab sweep` (each
grid point, in a worker process or a Ray task) both bring a run directory to completion through it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vaelab.config import RunConfig
from vaelab.data import Dataset
from vaelab.errors import VaelabError
from vaelab.run import Run, epochs_in_words, load_run, read_info, run_is_complete


def ensure_run(
    config: RunConfig, path: Path, data: Dataset, *, log: Callable[[str], None], verbose: int | str = "auto"
) -> Run:
    """The completed run of `config` in `path`: reused if it is there (the same configuration once both are resolved
    for `data`: `RunConfig.for_data`), resumed if it was interrupted."""
    from vaelab.training.loop import resume, train

    if not (path / "config.json").exists():
        return train(config, path, data=data, log=log, verbose=verbose)
    info = read_info(path)
    same = info.get("data_sha256") == data.sha256 and (
        RunConfig.from_dict(info["config"]).for_data(data) == config.for_data(data)
    )
    if not same:
        raise VaelabError(
            f"{path} holds a run with another configuration or other data; move it away or use another directory"
        )
    if not run_is_complete(path):
        return resume(path, data=data, log=log, verbose=verbose)
    log(f"vaelab: reusing {path} ({epochs_in_words(config.train.epochs)}, same configuration and data)")
    return load_run(path)
