"""Score a year's blocks on a Dask distributed cluster (past one machine).

One block is one task. Each worker process loads the model once (cached by model path and file
modification time), then reads (plain windowed reads of the store) and scores the blocks it is
given; the client side stays the one writer (:func:`pipeline.scoring.write_blocks`), taking results as
they complete. A task that raises is retried ``retries`` times; the tasks of a worker that dies are
redone by the scheduler on the other workers. The model code does not know where it runs.

Past one machine the workers read the model file and the year's mosaic (DATA_DIR/imagery) at the
paths the client sends, so DATA_DIR must be on a filesystem every worker mounts at the same path,
and every worker must run this code, installed as a package (``make`` installs it editable into
.venv: the scheduler unpickles the task graph too, so it needs the package as well).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from imagery.grid import CellRange
from model.bundle import ModelBundle, load_bundle
from model.fcn import MARGIN_PX
from model.score import CellScores, score_block
from pipeline.scoring import Runner, YearRecipe

#: Results in flight per worker: enough to keep each busy, few enough to bound client memory.
TASKS_PER_WORKER = 2
#: The model a worker keeps loaded (the current one; a new cycle's model replaces it).
_MODELS: dict[tuple[str, float], ModelBundle] = {}


def worker_bundle(path: str) -> ModelBundle:
    """The model at ``path``, loaded once per worker process (again when the file changes)."""
    key = (path, os.path.getmtime(path))
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_bundle(path)
    return _MODELS[key]


def score_block_task(model_path: str, recipe: YearRecipe, block: CellRange,
                     fcn_tile_cells: int, batch: int = 1) -> CellScores:
    """What a worker does for one block: read it (with the model's margin) and score it."""
    bundle = worker_bundle(model_path)
    tile = recipe.open().read_tile(block, MARGIN_PX, bundle.bands)
    return score_block(bundle, tile, recipe.grid, min_valid_fraction=recipe.min_valid_fraction,
                       fcn_tile_cells=fcn_tile_cells, batch=batch)


def parse_scheduler(address: str) -> int | str:
    """``local:N`` -> N (a LocalCluster of N worker processes), else the address itself."""
    if address.startswith("local:"):
        try:
            n = int(address.removeprefix("local:"))
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"scheduler {address!r}: local:N needs N >= 1 worker processes")
        return n
    if not address.strip():
        raise ValueError("empty scheduler address: give tcp://HOST:PORT or local:N")
    return address


@contextmanager
def dask_client(address: str, *, timeout_s: float = 30.0) -> Iterator[object]:
    """A ``distributed.Client`` for ``address``; ``local:N`` starts (and stops) a LocalCluster
    of N processes with one thread each on this machine. ValueError when the scheduler cannot be
    reached within ``timeout_s``."""
    from distributed import Client, LocalCluster

    target = parse_scheduler(address)
    if isinstance(target, int):
        with LocalCluster(n_workers=target, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield client
    else:
        try:
            client = Client(target, timeout=f"{timeout_s}s")
        except OSError as error:
            raise ValueError(f"cannot reach the Dask scheduler at {target}: {error}") from error
        with client:
            yield client


def dask_runner(client: object, model_path: str | Path, *, retries: int = 2,
                fcn_tile_cells: int = 4, batch: int = 1) -> Runner:
    """A scoring runner that sends each block to the cluster of ``client`` and yields results
    as they complete, with at most TASKS_PER_WORKER tasks per worker in flight; each worker scores
    ``batch`` FCN passes per call (:func:`model.score.score_block`)."""
    from distributed import as_completed

    path = str(Path(model_path).resolve())

    def run(bundle: ModelBundle, recipe: YearRecipe, blocks: Sequence[CellRange]
            ) -> Iterator[tuple[CellRange, CellScores]]:
        if Path(path).stem != bundle.version:
            raise ValueError(f"model file {path} is not version {bundle.version}")
        todo = iter(blocks)
        limit = TASKS_PER_WORKER * max(1, len(client.scheduler_info()["workers"]))
        which: dict[str, CellRange] = {}

        def submit() -> object | None:
            block = next(todo, None)
            if block is None:
                return None
            future = client.submit(score_block_task, path, recipe, block, fcn_tile_cells, batch,
                                   retries=retries, pure=False,
                                   key=f"score-{bundle.version}-{recipe.year}-"
                                       f"{block.row0}-{block.col0}")
            which[future.key] = block
            return future

        started = [f for f in (submit() for _ in range(limit)) if f is not None]
        pending = as_completed(started)
        for future in pending:
            cells = future.result()
            block = which.pop(future.key)
            future.release()
            following = submit()
            if following is not None:
                pending.add(following)
            yield block, cells

    return run
