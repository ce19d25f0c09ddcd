"""`netspec predict --cluster` on Dask (the [cluster] extra): local workers give the rows one process
gives; a worker killed mid-job loses nothing and repeats nothing; a cluster that cannot be used is
one clear error before any work."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import netspec

pytest.importorskip("distributed")

from test_predict import SPEC, assert_clean_failure, images, read_csv  # noqa: E402


def rows_by_path(path) -> dict[str, dict]:
    rows = read_csv(path)
    by_path = {row["path"]: row for row in rows}
    assert len(by_path) == len(rows), "an input is in OUT twice"
    return by_path


def assert_same_rows(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for path, row in a.items():
        assert row["class"] == b[path]["class"], path
        np.testing.assert_allclose(float(row["score"]), float(b[path]["score"]), rtol=1e-5)


def test_a_local_cluster_gives_the_rows_of_one_process(cli, write_spec, workdir):
    write_spec(SPEC)
    images(workdir / "imgs", 30)
    (workdir / "imgs" / "broken.png").write_bytes(b"\x89PNG broken")
    assert cli("predict", "spec.yaml", "--input", "imgs", "-o", "one.csv", "--batch", "4").code == 0
    r = cli("predict", "spec.yaml", "--input", "imgs", "-o", "two.csv", "--batch", "4", "--cluster", "local:2")
    assert r.code == 0, r.err
    assert "30 rows" in r.out and "1 input that could not be read" in r.out
    assert_same_rows(rows_by_path(workdir / "two.csv"), rows_by_path(workdir / "one.csv"))
    assert read_csv(workdir / "two.errors.csv") == read_csv(workdir / "one.errors.csv")


def test_a_worker_killed_mid_job_loses_and_repeats_nothing(load_spec, workdir):
    from distributed import LocalCluster
    graph = load_spec(SPEC)
    np.save(workdir / "x.npy", np.random.default_rng(0).standard_normal((400, 3, 12, 12)).astype(np.float32))
    alone = {row["path"]: row for row in netspec.predict(graph, "x.npy", batch=4)}
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:  # (joined by address)
        job = netspec.predict(graph, "x.npy", "out.csv", batch=4, cluster=cluster.scheduler_address, partition=8)
        first = next(job)
        os.kill(cluster.workers[0].pid, signal.SIGKILL)  # its partitions run again elsewhere, or on its restart
        rows = [first] + list(job)
    assert len(rows) == 400 and not job.errors
    written = rows_by_path(workdir / "out.csv")
    assert written.keys() == alone.keys()
    assert_same_rows(written, {p: {k: str(v) for k, v in row.items()} for p, row in alone.items()})


def test_a_cluster_that_cannot_be_used_is_refused_before_any_work(cli, write_spec, workdir):
    write_spec(SPEC)
    images(workdir / "imgs", 2)
    for address, code, words in [("ray://head:10001", 2, ["netspec runs on Dask", "tcp://"]),
                                 ("local:0", 2, ["local:N"]),
                                 ("somewhere", 2, ["scheduler's address"]),
                                 ("tcp://127.0.0.1:1", 1, ["cannot reach the Dask scheduler"])]:
        assert_clean_failure(cli("predict", "spec.yaml", "--input", "imgs", "-o", "o.csv", "--cluster", address),
                             code, *words)
    assert not list(workdir.glob("*o.csv*"))
