"""A short run of the command-line mutation fuzzer (tools/fuzz.py, issue #25) in CI: a fixed seed and a
few cases of every family (spec text, spec trees, file kinds, command-line arguments, input and
weights files), each run through `netspec.cli.main` in a worker process with a time and memory
bound. No case may end in an internal error, a hang, a crash, an unclean error or a leak; and every
family must have produced both clean errors and successes, so that the fuzzer cannot quietly test
nothing. The first cases of each family are what issue #25 found (a NUL or a YAML tag in a spec,
/dev/zero, a FIFO, imports of /etc/shadow and ../, --seed -1, --batch 10**12, a 30000×30000 PNG, a
catastrophic regex in a rename map, ...), so this short run covers them; about 10 s on two cores
(each hang would add 20 s: it is tried twice). The long run is `python tools/fuzz.py --seconds 600`."""
from __future__ import annotations

import pytest

from conftest import load_fuzz

fuzz = load_fuzz()

SEED = 25  # the number; any fixed seed will do
PER_FAMILY = 12


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    keep = tmp_path_factory.mktemp("fuzz-failures")
    return fuzz.fuzz(SEED, per_family=PER_FAMILY, jobs=2, timeout=10.0, mem_gib=4.0, keep=keep)


def test_no_internal_errors_hangs_or_crashes(report):
    assert len(report.outcomes) == PER_FAMILY * len(fuzz.FAMILIES)
    if report.failures():
        pytest.fail("\n" + report.table() + report.format_failures(), pytrace=False)


@pytest.mark.parametrize("family", fuzz.FAMILIES)
def test_every_family_finds_clean_errors_and_successes(report, family):
    counts = report.counts()[family]
    assert sum(counts.values()) == PER_FAMILY
    assert counts["clean"] > 0, f"{family}: no case was refused cleanly\n{report.table()}"
    assert counts["ok"] > 0, f"{family}: no case succeeded\n{report.table()}"


def test_cases_are_reproducible():
    for family in fuzz.FAMILIES:
        for index in (0, 7, 31):
            assert fuzz.make_case(family, SEED, index) == fuzz.make_case(family, SEED, index)
    assert any(fuzz.make_case("text", 1, i) != fuzz.make_case("text", 2, i) for i in range(1, 6))


def test_the_classes():
    case = fuzz.make_case("text", SEED, 1)
    ok = {"rc": 0, "stdout": "ok", "stderr": ""}
    assert fuzz.classify(case, ok)[0] == "ok"
    assert fuzz.classify(case, {"rc": 1, "stderr": "spec.yaml:3:5: error: unknown op 'conv'\n1 error"})[0] == "clean"
    assert fuzz.classify(case, {"rc": 2, "stderr": "netspec: error: 'o.npy' already exists"})[0] == "clean"
    assert fuzz.classify(case, {"rc": 1, "stderr": "spec.yaml: error: no line"})[0] == "unclean"
    assert fuzz.classify(case, {"rc": 1, "stderr": "spec.yaml:0:0: error: line zero"})[0] == "unclean"
    assert fuzz.classify(case, {"rc": 1, "stderr": ""})[0] == "unclean"
    assert fuzz.classify(case, {"rc": 3, "stderr": "netspec: internal error: KeyError: 'x'"})[0] == "internal"
    assert fuzz.classify(case, {"rc": 3, "stderr": "netspec: internal error: MemoryError: "})[0] == "crash"
    assert fuzz.classify(case, {"exc": "ValueError: x at cli.py:3"})[0] == "crash"
    assert fuzz.classify(case, {"died": "signal SIGSEGV"})[0] == "crash"
    assert fuzz.classify(case, {"hang": True})[0] == "hang"
    case.leak = [fuzz.SECRET]
    assert fuzz.classify(case, {"rc": 1, "stderr": f"x.yaml:1:3: error: bad key {fuzz.SECRET}"})[0] == "leak"
