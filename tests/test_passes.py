"""Graph passes, each on small graphs where it must fire and where it must not, the pass manager's
verification, and the memory planner."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.ir.verify import GraphError
from netspec.passes.fold_bn import fold_batchnorm
from netspec.passes.manager import optimize, run_passes
from netspec.passes.memory import plan_memory
from netspec.passes.simplify import eliminate_dead_code, remove_identities
from netspec.weights import init_weights

SPECS = Path(__file__).resolve().parent.parent / "specs"


def random_weights(graph, seed=0):
    rng = np.random.default_rng(seed)
    w = init_weights(graph, seed)
    for k, v in w.items():
        if not k.endswith(".weight") or v.ndim == 1:  # biases and batch-norm vectors
            w[k] = (rng.uniform(0.5, 1.5, v.shape) if k.endswith(("running_var", ".weight"))
                    else rng.normal(0, 0.3, v.shape)).astype(np.float32)
    return w


def run(graph, weights, x):
    return netspec.compile(graph, backend="reference", weights=weights, optimize=False).run(x)


CONV_BN = """
input: {shape: [3, 8, 8]}
layers:
  - {op: conv2d, name: conv, out: 6, kernel: 3, padding: 1, groups: 3, bias: false}
  - {op: batchnorm2d, name: bn, eps: 0.01}
  - {op: relu, name: act}
  - {op: global_avgpool}
  - {op: flatten}
  - {op: linear, name: fc, out: 5}
  - {op: batchnorm2d, name: bn_fc, affine: false}
  - {op: identity, name: out}
"""


def test_fold_bn_into_conv_and_linear_keeps_the_function(load_spec):
    g = load_spec(CONV_BN)
    w = random_weights(g)
    folded, fw = fold_batchnorm(g, w)
    assert [n.name for n in folded.nodes] == ["conv", "act", "3", "4", "fc", "out"]
    assert folded.node("conv").attrs.bias and folded.node("act").inputs == ("conv",)
    assert "bn.running_mean" not in fw and "conv.bias" in fw
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(folded, fw, x)["out"], run(g, w, x)["out"], rtol=1e-4, atol=1e-4)
    assert w["conv.weight"] is not fw["conv.weight"]  # the caller's weights are untouched


def test_fold_bn_does_not_fire_when_the_conv_has_another_user(load_spec):
    g = load_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: conv, out: 4, kernel: 1}
          - {op: batchnorm2d, name: bn}
          - {op: add, in: [bn, conv]}
        """)
    w = random_weights(g)
    folded, fw = fold_batchnorm(g, w)
    assert folded.nodes == g.nodes and fw == w


def test_fold_bn_does_not_remove_an_output(load_spec):
    g = load_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: conv, out: 4, kernel: 1}
          - {op: batchnorm2d, name: bn}
        """)
    assert fold_batchnorm(g, random_weights(g))[0].nodes == g.nodes


def test_fold_bn_leaves_transposed_convs(load_spec):
    g = load_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv_transpose2d, name: up, out: 4, kernel: 2, stride: 2}
          - {op: batchnorm2d, name: bn}
          - {op: relu}
        """)
    assert [n.op for n in fold_batchnorm(g, random_weights(g))[0].nodes] == ["conv_transpose2d", "batchnorm2d",
                                                                              "relu"]


def test_remove_identities_rewires_users_but_keeps_outputs(load_spec):
    g = load_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: conv, out: 4, kernel: 1}
          - {op: dropout, name: drop}
          - {op: identity, name: same}
          - {op: relu, name: act}
          - {op: dropout, name: last}
        """)
    out, _ = remove_identities(g, {})
    assert [n.name for n in out.nodes] == ["conv", "act", "last"]
    assert out.node("act").inputs == ("conv",)


def test_dead_code_elimination_drops_unused_branches_and_their_weights(load_spec):
    g = load_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: used, out: 4, kernel: 1}
          - {op: conv2d, name: unused, in: input, out: 4, kernel: 1}
          - {op: relu, name: act, in: used}
        """)
    out, w = eliminate_dead_code(g, init_weights(g))
    assert [n.name for n in out.nodes] == ["used", "act"]
    assert set(w) == {"used.weight", "used.bias"}


def test_the_manager_verifies_after_each_pass(load_spec):
    g = load_spec(CONV_BN)

    def broken(graph, weights):  # drops a node that others still use
        return graph.replace_nodes(graph.nodes[1:]), weights

    with pytest.raises(GraphError, match="not defined before it"):
        run_passes(g, init_weights(g), [("broken", broken)])


def test_optimize_records_what_each_pass_changed(load_spec):
    g = load_spec(CONV_BN).active("eval")
    records = []
    optimized, _ = optimize(g, random_weights(g), "eval", records)
    by_name = {r.name: r for r in records}
    assert by_name["remove_identities"].removed == []  # `out` is the output: kept
    assert sorted(by_name["fold_bn"].removed) == ["bn", "bn_fc"]
    assert by_name["fuse_epilogues"].removed == ["act"] and by_name["fuse_epilogues"].changed == ["conv", "3"]
    assert [r.name for r in records] == ["remove_identities", "fold_bn", "fuse_epilogues", "fuse_squeeze_excitation", "dce"]
    assert len(optimized.nodes) == len(g.nodes) - 3


def test_train_mode_keeps_batch_norm(load_spec):
    g = load_spec(CONV_BN).active("train")
    optimized, _ = optimize(g, random_weights(g), "train")
    assert sum(n.op == "batchnorm2d" for n in optimized.nodes) == 2


def test_vgg16_planned_peak_is_at_most_25_mib():
    plan = plan_memory(netspec.load(SPECS / "vgg16.yaml").active("eval"), batch=1)
    assert plan.arena <= 25 * 2**20
    assert plan.unplanned > 4 * plan.arena


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("name", ["resnet18", "googlenet", "unet", "efficientnet"])
def test_planned_buffers_never_overlap_while_alive(name, batch):
    graph = netspec.load(SPECS / f"{name}.yaml").active("eval")
    plan = plan_memory(graph, batch=batch)
    bufs = plan.buffers

    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            if a.start <= b.end and b.start <= a.end and not _contains(a, b) and not _contains(b, a):
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a.tensors, b.tensors)
    for part in (b for b in bufs if b.parent is not None):  # inside its concat's output, alive within it
        assert part.parent.offset <= part.offset and part.offset + part.size <= part.parent.offset + part.parent.size
        assert part.parent.start <= part.start and part.end <= part.parent.end
    assert plan.arena <= plan.unplanned
    assert set(plan.offsets) == set(graph.inputs) | {n.name for n in graph.nodes}
    assert (sum(b.parent is not None for b in bufs) > 0) == (batch == 1 and name in ("googlenet", "unet"))


def _contains(outer, inner) -> bool:
    """Whether `inner` is placed inside `outer` (a part of it, or of a part of it)."""
    while inner.parent is not None:
        inner = inner.parent
        if inner is outer:
            return True
    return False


def test_a_concats_inputs_are_written_in_its_output(load_spec):
    """At batch 1 a channel slice of the output is one contiguous run: each input a step wrote and
    only the concat reads from then on is placed there (its in-place chain with it), so the concat
    copies nothing for it. Not the caller's input, nor one read after the concat, nor at batch 2."""
    g = load_spec("""
        input: {shape: [3, 4, 4]}
        layers:
          - {op: conv2d, name: a, out: 2, kernel: 1}
          - {op: relu, name: a_act}
          - {op: conv2d, name: b, in: input, out: 3, kernel: 1}
          - {op: conv2d, name: c, in: input, out: 4, kernel: 1}
          - {op: concat, name: cat, in: [a_act, b, c, input]}
          - {op: conv2d, name: after, out: 2, kernel: 1}
          - {op: conv2d, name: c_later, in: c, out: 2, kernel: 1}
          - {op: add, name: out, in: [after, c_later]}
        """)
    plan = plan_memory(g, batch=1)
    buffer = {t: b for b in plan.buffers for t in b.tensors}
    cat = buffer["cat"]
    floats = 4 * 4 * 4  # bytes per channel of a 4×4 map
    assert buffer["a"] is buffer["a_act"] and buffer["a"].parent is cat and plan.offsets["a_act"] == cat.offset
    assert buffer["b"].parent is cat and plan.offsets["b"] == cat.offset + 2 * floats
    assert buffer["c"].parent is None  # read after the concat (c_used_later): copied
    assert buffer["input"].parent is None  # the caller's array: copied
    assert cat.start == buffer["a"].start  # the output is reserved from its first part's first write
    assert "cat" not in plan.concats_in_place  # (two inputs still to copy)
    assert all(b.parent is None for b in plan_memory(g, batch=2).buffers)  # channel slices not contiguous


def test_a_concat_with_every_input_in_place_is_not_run(load_spec):
    """When every input of a concat was written in its place, the CPU executor skips the concat's
    step. Results agree with the reference at batch 1 and 2, also where the concat's output is
    then overwritten in place by a graph output (allocated afresh every run, its parts with it),
    and a returned output is not overwritten by the next run."""
    nested = load_spec("""
        input: {shape: [3, 4, 4]}
        outputs: [cat, head]
        layers:
          - {op: conv2d, name: a, out: 2, kernel: 1}
          - {op: relu, name: a_act}
          - {op: conv2d, name: b, in: input, out: 3, kernel: 3, padding: 1}
          - {op: maxpool2d, name: p, in: input, kernel: 3, stride: 1, padding: 1}
          - {op: concat, name: inner, in: [b, p]}
          - {op: concat, name: cat, in: [a_act, inner]}
          - {op: flatten, name: flat, in: inner}
          - {op: linear, name: head, out: 3}
        """)
    plan = plan_memory(nested, batch=1)
    assert plan.concats_in_place == {"inner"}  # (cat is a graph output; flat reads inner after cat)
    into_output = load_spec("""
        input: {shape: [3, 4, 4]}
        layers:
          - {op: conv2d, name: a, out: 2, kernel: 1}
          - {op: flatten, name: a_flat}
          - {op: conv2d, name: b, in: input, out: 3, kernel: 3, padding: 1}
          - {op: flatten, name: b_flat}
          - {op: concat, name: cat, in: [a_flat, b_flat]}
          - {op: relu, name: act}
        """)
    plan = plan_memory(into_output, batch=1)
    assert plan.concats_in_place == {"cat"} and plan.in_place().get("act") == "cat"
    for graph in (nested, into_output):
        exe = netspec.compile(graph, backend="cpu", weights=random_weights(graph), progress=False)
        reference = netspec.compile(graph, backend="reference", weights=exe.weights)
        rng = np.random.default_rng(0)
        for batch in (1, 2, 1):
            x = rng.standard_normal((batch, 3, 4, 4), dtype=np.float32)
            got = exe.run(x)
            kept = {k: v.copy() for k, v in got.items()}
            expected = reference.run(x)
            for k in expected:
                np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-5)
            exe.run(-x)
            for k in got:
                np.testing.assert_array_equal(got[k], kept[k])


def test_in_place_only_when_the_input_dies(load_spec):
    g = load_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: conv, out: 4, kernel: 1}
          - {op: relu, name: act}
          - {op: sigmoid, name: gate, in: conv}
          - {op: mul, name: out, in: [act, gate]}
        """)
    in_place = plan_memory(g).in_place()
    assert "act" not in in_place  # conv is still read by gate
    assert in_place.get("gate") == "conv"  # conv's last user
    assert in_place.get("out") == "act"


def test_dump_passes_cli(cli, write_spec):
    write_spec(CONV_BN)
    r = cli("compile", "spec.yaml", "--dump-passes")
    assert r.code == 0
    assert "# after fold_bn: 2 removed, 0 added" in r.out
    assert "#   removed: bn, bn_fc" in r.out
    assert "conv = conv2d(input)" in r.out and "bias=True" in r.out


def test_summary_reports_planned_peak(cli):
    r = cli("summary", str(SPECS / "vgg16.yaml"))
    assert "planned peak 24.5 MiB" in r.out


def test_an_unused_in_place_output_still_holds_its_buffer(load_spec):
    g = load_spec("""
        input: {shape: [4, 8, 8]}
        layers:
          - {op: conv2d, name: a, out: 4, kernel: 1}
          - {op: relu, name: dead}
          - {op: conv2d, name: d, in: a, out: 4, kernel: 1}
          - {op: add, name: out, in: [a, d]}
        """)
    plan = plan_memory(g)
    dead = next(b for b in plan.buffers if "dead" in b.tensors)
    others = [b for b in plan.buffers if b is not dead and b.start <= dead.end and dead.start <= b.end]
    for b in others:
        assert dead.offset + dead.size <= b.offset or b.offset + b.size <= dead.offset


def test_a_view_shares_its_input_buffer_and_keeps_it_alive(load_spec):
    g = load_spec("""
        input: {shape: [4, 3, 3]}
        outputs: [fc, c]
        layers:
          - {op: conv2d, name: a, out: 4, kernel: 1}
          - {op: flatten, name: flat}
          - {op: conv2d, name: b, in: a, out: 4, kernel: 1}
          - {op: relu, name: r}
          - {op: conv2d, name: c, out: 4, kernel: 1}
          - {op: linear, name: fc, in: flat, out: 3}
        """)
    plan = plan_memory(g)
    held = next(b for b in plan.buffers if "a" in b.tensors)
    assert held.tensors == ["a", "flat"]  # flatten's output is a's memory, not a copy
    assert held.end == [n.name for n in g.nodes].index("fc")  # alive until the view's last read
    assert plan.in_place().get("r") == "b"  # (b dies at r: written over)
    for b in plan.buffers:  # nothing placed over a while flat may still be read
        if b is not held and b.start <= held.end and held.start <= b.end:
            assert held.offset + held.size <= b.offset or b.offset + b.size <= held.offset, b.tensors


def test_nothing_writes_in_place_over_a_view_of_the_input(load_spec):
    g = load_spec("""
        input: {shape: [4, 2, 2]}
        layers:
          - {op: flatten, name: flat}
          - {op: relu, name: act}
          - {op: linear, name: fc, out: 3}
        """)
    assert "act" not in plan_memory(g).in_place()  # flat is the caller's input array
    x = np.random.default_rng(0).standard_normal((2, 4, 2, 2), dtype=np.float32)
    kept = x.copy()
    netspec.compile(g, backend="cpu", progress=False).run(x)
    np.testing.assert_array_equal(x, kept)
