"""Task runners chosen by a flow parameter: threads (the default) or Dask.

Prefect fixes a flow's task runner when the flow is decorated, and a deployment can only pass
parameters. So the stage flows open the runner themselves, from their ``runner`` parameter, and map
their tasks onto it::

    with task_runner("dask", dask_address=None, workers=2) as runner:
        futures = runner.map(prepare_one_image, {"item": items, ...})

* ``threads``: a :class:`~prefect.task_runners.ThreadPoolTaskRunner` with ``workers`` threads, in the
  flow run's own process.
* ``dask``: a :class:`~prefect_dask.DaskTaskRunner` (``pip install prefect-dask``) connected to
  ``dask_address`` (an existing scheduler, e.g. ``tcp://10.0.0.5:8786``), or, with no address, to a
  ``LocalCluster`` of ``workers`` single-threaded worker processes on 127.0.0.1 started for the
  duration of the block. :func:`dask_scheduler` lets a parent flow start that cluster once and hand
  its address to every stage.

Tasks are submitted with paths, ids and small configs only, so they pickle to Dask worker processes
unchanged. The embedded offline describer listens on 127.0.0.1 of the flow run's machine: with a
scheduler on other machines, give the describe stage a ``base_url`` its workers can reach.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

#: The values the ``runner`` flow parameter accepts.
RUNNERS = ("threads", "dask")

logger = logging.getLogger(__name__)


def check_runner(kind: str) -> str:
    """``kind`` if it names a runner, else a ``ValueError`` listing the valid ones."""
    if kind not in RUNNERS:
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, got {kind!r}")
    return kind


@contextmanager
def dask_scheduler(address: str | None = None, workers: int = 2) -> Iterator[str]:
    """The address of a Dask scheduler for the duration of a ``with`` block.

    Args:
        address: an existing scheduler (``tcp://host:8786``); yielded as is, nothing is started.
        workers: with no address, the number of worker processes (one thread each) of the
            ``LocalCluster`` started on 127.0.0.1 (its status page too), and closed on exit.
    """
    if address:
        yield address
        return
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # loopback only, any free port
        # Workers inherit the environment (PREFECT_API_URL and friends) from this process.
        silence_logs=logging.WARNING,
    ) as cluster:
        logger.info("started a local Dask cluster at %s with %d workers", cluster.scheduler_address, workers)
        yield cluster.scheduler_address


@contextmanager
def task_runner(
    kind: str = "threads", dask_address: str | None = None, workers: int = 2
) -> Iterator[TaskRunner[Any]]:
    """A started task runner of ``kind`` (see the module docstring); stopped when the block ends."""
    check_runner(kind)
    if kind == "threads":
        pool: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=max(1, workers))
        with pool:
            yield pool
        return
    from prefect_dask import DaskTaskRunner

    with dask_scheduler(dask_address, workers) as address, DaskTaskRunner(address=address) as runner:
        yield runner


@contextmanager
def shared_scheduler(kind: str, dask_address: str | None = None, workers: int = 2) -> Iterator[str | None]:
    """For a parent flow: with ``kind == "dask"``, one scheduler address for all its stages (a local
    cluster started once when no address is given); otherwise ``dask_address`` as is."""
    if check_runner(kind) != "dask":
        yield dask_address
        return
    with dask_scheduler(dask_address, workers) as address:
        yield address
