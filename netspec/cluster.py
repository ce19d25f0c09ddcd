"""`netspec predict --cluster`: the job's inputs in partitions on Dask workers.

Dask distributed, not a scheduler of our own: it starts local workers (`local:N`) or joins a
cluster that exists (`tcp://HOST:8786`), places each partition on a worker, and when a worker dies
runs its partitions again elsewhere. A partition's rows come back only when it is done, so each
input reaches OUT exactly once. Each worker process compiles the network once (its kernels from
netspec's cache) and keeps it for every partition of the job.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import uuid
from itertools import islice
from typing import Iterator

from .predictions import Job, PredictError, Runner, Source, run_batches

_RUNNERS: dict[tuple, Runner] = {}  # per worker process: (job key, threads) → its compiled network
_LOCK = threading.Lock()


def _threads(job: Job, slots: dict[str, int]) -> int:
    """Kernel threads per task on this worker: --threads, else the machine's cores shared by the task
    slots of every worker on it (`slots`: per host, from the scheduler)."""
    if job.threads:
        return job.threads
    from distributed import get_worker
    from distributed.comm import get_address_host
    return max(1, (os.cpu_count() or 1) // max(1, slots.get(get_address_host(get_worker().address), 1)))


def _runner(key: str, job: Job, weights, slots) -> tuple[Runner, int]:
    """This worker's compiled network for the job, and its kernel threads. The thread counts are set
    here, once per process for BLAS (threadpoolctl takes milliseconds a call: not once per task)."""
    import numba
    threads = min(_threads(job, slots), numba.config.NUMBA_NUM_THREADS)
    with _LOCK:
        runner = _RUNNERS.get((key, threads))
        if runner is None:
            from threadpoolctl import threadpool_limits

            from .threads import start_numba_threads
            _RUNNERS.clear()  # (a new job: the last one's network is not needed any more)
            job.weights = weights
            start_numba_threads()
            threadpool_limits(limits=threads, user_api="blas")  # (kept: this process works for the job)
            numba.set_num_threads(threads)
            runner = _RUNNERS[key, threads] = Runner(job, progress=False)
        return runner, threads


def warm(key: str, job: Job, weights, slots) -> float:
    """Compile the network on this worker before the clock starts; the seconds a batch takes."""
    import time

    import numpy as np
    runner, _ = _runner(key, job, weights, slots)
    x = np.zeros((job.batch,) + next(iter(job.graph.inputs.values())).dims, np.float32)
    start = time.perf_counter()
    runner.run(x)
    return time.perf_counter() - start


def run_part(key: str, job: Job, weights, slots, source: Source) -> list:
    """One partition, run on a worker: [(names, results, errors)] per batch."""
    import numba
    runner, threads = _runner(key, job, weights, slots)
    numba.set_num_threads(threads)  # (Numba's count is per thread: this task's, which the program was compiled for)
    return list(run_batches(runner, source, list(range(len(source.names)))))


class Engine:
    def __init__(self, client, cluster=None):
        self.client, self.cluster = client, cluster

    def run(self, job: Job, source: Source, rows: list[int], partition: int | None) -> Iterator[tuple]:
        """(names, results, errors) per batch, as partitions finish (in any order). The network is
        compiled on every worker before this returns."""
        from distributed.comm import get_address_host
        self.client.wait_for_workers(1)
        info = self.client.scheduler_info()["workers"]
        workers = list(info)
        slots: dict[str, int] = {}  # task slots per machine: its cores are shared among them
        for address, worker in info.items():
            host = get_address_host(address)
            slots[host] = slots.get(host, 0) + worker.get("nthreads", 1)
        weights = job.weights
        if isinstance(weights, (str, os.PathLike)):  # read here, sent once to every worker
            from .weights import load_weights
            weights = load_weights(weights, job.graph)
        if weights is not None:
            weights = self.client.scatter([weights], broadcast=True)[0]
        shipped = Job(job.graph, None, job.seed, job.batch, job.top, job.threads, job.decoders, job.ahead)
        key = uuid.uuid4().hex
        # every worker compiles before the first partition (and before the clock of the job starts)
        seconds = self.client.gather([self.client.submit(warm, key, shipped, weights, slots, workers=[w], pure=False)
                                      for w in workers])
        least = math.ceil(0.05 / max(min(seconds), 1e-4))  # batches in 50 ms
        return self._results(key, shipped, weights, slots, source, rows, partition, len(workers), least)

    def _results(self, key, shipped, weights, slots, source, rows, partition, workers, least) -> Iterator[tuple]:
        from distributed import as_completed

        def partitions():
            """Whole batches, fewer as the job ends (a share of what is left: guided scheduling), so
            that no worker is left with a long last partition while the others wait; at least 50 ms of
            batches (a task costs the engine milliseconds: LeNet-5's batches take less), at most 32
            batches (a partition's rows are held until it is done)."""
            start = 0
            while start < len(rows):
                batches = math.ceil((len(rows) - start) / (4 * workers * shipped.batch))
                size = partition or shipped.batch * min(32, max(1, least, batches))
                yield rows[start:start + size]
                start += size
        parts = partitions()

        def submit(part):
            return self.client.submit(run_part, key, shipped, weights, slots, source.part(part), pure=False)
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
    from .cli import UsageError
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise PredictError("--cluster needs Dask distributed: .venv/bin/pip install -e '.[cluster]'") from None
    if address.startswith("local:"):
        try:
            n = int(address[len("local:"):])
        except ValueError:
            n = 0
        if not 1 <= n <= 256:
            raise UsageError(f"--cluster {address}: expected local:N with N workers, 1 to 256")
        try:
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=logging.ERROR)
        except (OSError, RuntimeError, TimeoutError) as e:  # (e.g. no room for the processes)
            raise PredictError(f"cannot start a local Dask cluster of {n} workers: {e}") from None
        return Engine(Client(cluster), cluster)
    if address.startswith("ray://"):
        raise UsageError("--cluster: netspec runs on Dask; give a Dask scheduler's address (tcp://HOST:8786) "
                         "or local:N")
    if "://" not in address:
        raise UsageError(f"--cluster {address}: expected local:N or a Dask scheduler's address (tcp://HOST:8786)")
    try:
        return Engine(Client(address, timeout="10s"))
    except (OSError, TimeoutError) as e:
        raise PredictError(f"cannot reach the Dask scheduler at {address}: {e}") from None
