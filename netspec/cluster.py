"""`netspec predict --cluster`: the job's inputs in partitions on Dask workers.

Dask distributed, not a scheduler of our own: it starts local workers (`local:N`) or joins a
cluster that exists (`tcp://HOST:8786`), places each partition on a worker, and when a worker dies
runs its partitions again elsewhere. A partition's rows come back only when it is done, so each
input reaches OUT exactly once. Each worker process compiles the network once (its kernels from
netspec's cache) and keeps it for every partition of the job. What runs on the workers is
netspec/predictions.py's (`warm_worker`, `run_part`); this module knows only the engine.
"""
from __future__ import annotations

import logging
import math
import os
import uuid
from itertools import islice
from typing import Callable, Iterator


class ClusterError(Exception):
    """A cluster that cannot be used: Dask missing, a scheduler that cannot be reached."""

class Engine:
    def __init__(self, client, cluster=None):
        self.client, self.cluster = client, cluster

    def run(self, job, weights, source, rows: list[int], partition: int | None, warm: Callable,
            work: Callable) -> Iterator[tuple]:
        """(names, results, errors) per batch, as partitions finish (in any order). `job` (its
        `graph` for weights read from a file, its `batch`) and `source` (`part(rows)`) go to the
        workers as they are; there `warm(key, job, weights, slots)` compiles the network and gives
        the seconds a batch takes, before this returns, and `work(key, job, weights, slots, part)`
        runs a partition (netspec/predictions.py has them)."""
        from distributed.comm import get_address_host
        self.client.wait_for_workers(1)
        info = self.client.scheduler_info()["workers"]
        workers = list(info)
        slots: dict[str, int] = {}  # task slots per machine: its cores are shared among them
        for address, worker in info.items():
            host = get_address_host(address)
            slots[host] = slots.get(host, 0) + worker.get("nthreads", 1)
        if isinstance(weights, (str, os.PathLike)):  # read here, sent once to every worker
            from .weights import load_weights
            weights = load_weights(weights, job.graph)
        if weights is not None:
            weights = self.client.scatter([weights], broadcast=True)[0]
        key = uuid.uuid4().hex
        # every worker compiles before the first partition (and before the clock of the job starts)
        seconds = self.client.gather([self.client.submit(warm, key, job, weights, slots, workers=[w], pure=False)
                                      for w in workers])
        least = math.ceil(0.05 / max(min(seconds), 1e-4))  # batches in 50 ms
        return self._results(key, job, weights, slots, source, rows, partition, len(workers), least, work)

    def _results(self, key, job, weights, slots, source, rows, partition, workers, least, work) -> Iterator[tuple]:
        from distributed import as_completed

        def partitions():
            """Whole batches, fewer as the job ends (a share of what is left: guided scheduling), so
            that no worker is left with a long last partition while the others wait; at least 50 ms of
            batches (a task costs the engine milliseconds: LeNet-5's batches take less), at most 32
            batches (a partition's rows are held until it is done)."""
            start = 0
            while start < len(rows):
                batches = math.ceil((len(rows) - start) / (4 * workers * job.batch))
                size = partition or job.batch * min(32, max(1, least, batches))
                yield rows[start:start + size]
                start += size
        parts = partitions()

        def submit(part):
            return self.client.submit(work, key, job, weights, slots, source.part(part), pure=False)
        running = as_completed([submit(p) for p in islice(parts, 2 * workers)])  # (bounded: memory)
        for future in running:
            batches = future.result()
            future.release()
            part = next(parts, None)
            if part is not None:
                running.add(submit(part))
            yield from batches

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def connect(address: str) -> Engine:
    """`local:N` (N worker processes here, one task each) or a Dask scheduler's address."""
    from .options import UsageError
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterError("--cluster needs Dask distributed: .venv/bin/pip install -e '.[cluster]'") from None
    if address.startswith("local:"):
        try:
            n = int(address[len("local:"):])
        except ValueError:
            n = 0
        if not 1 <= n <= 256:
            raise UsageError(f"--cluster {address}: expected local:N with N workers, 1 to 256")
        import dask
        try:
            # (without the workers' statistical profiler: it walks the running task's stack every 10 ms,
            # measured here at 3-4 µs of a worker's CPU per LeNet-5 input, for a dashboard nobody opens)
            with dask.config.set({"distributed.worker.profile.enabled": False}):
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=logging.ERROR)
        except (OSError, RuntimeError, TimeoutError) as e:  # (e.g. no room for the processes)
            raise ClusterError(f"cannot start a local Dask cluster of {n} workers: {e}") from None
        return Engine(Client(cluster), cluster)
    if address.startswith("ray://"):
        raise UsageError("--cluster: netspec runs on Dask; give a Dask scheduler's address (tcp://HOST:8786) "
                         "or local:N")
    if "://" not in address:
        raise UsageError(f"--cluster {address}: expected local:N or a Dask scheduler's address (tcp://HOST:8786)")
    try:
        return Engine(Client(address, timeout="10s"))
    except (OSError, TimeoutError) as e:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {e}") from None
