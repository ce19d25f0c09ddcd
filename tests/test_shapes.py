"""Shape rules of the op registry against independent brute-force counts."""
from __future__ import annotations

from math import prod

import pytest
from hypothesis import assume, given, settings, strategies as st
from pydantic import ValidationError

from netspec import ops
from netspec.ir.types import TensorType
from netspec.ops.registry import ShapeError, infer_output


def image(c, h, w, batch="N"):
    return TensorType((batch, c, h, w))


def run(op_name, attrs, *inputs):
    op = ops.get(op_name)
    return infer_output(op, op.attrs.model_validate(attrs), list(inputs))


# --- brute-force window counts ---------------------------------------------------------------------

def window_starts(size, kernel_eff, stride, pad_before, pad_after, ceil_mode=False):
    """Start positions (in padded coordinates) of the sliding windows, found by walking.

    Floor mode: every window lies inside the padded input. Ceil mode (PyTorch): windows continue until
    one reaches the end of the padded input, the last one may overhang it, but a window must start inside
    the input or the left padding. The kernel must fit the padded input at all."""
    padded = size + pad_before + pad_after
    if kernel_eff > padded:
        return []
    starts, s = [], 0
    while True:
        if s + kernel_eff <= padded:
            starts.append(s)
        elif ceil_mode and starts[-1] + kernel_eff < padded:
            starts.append(s)  # the previous window stopped short of the end: one more, overhanging
        else:
            break
        s += stride
    if ceil_mode:
        starts = [s for s in starts if s < size + pad_before]
    return starts


def test_window_starts_sanity():
    # hand-checked: size 5, kernel 2, stride 2 -> floor 2 windows, ceil 3 (torch.nn.MaxPool2d(2, 2, ceil_mode=True))
    assert window_starts(5, 2, 2, 0, 0) == [0, 2]
    assert window_starts(5, 2, 2, 0, 0, True) == [0, 2, 4]
    # ResNet stem: 112, k 3, s 2, p 1 -> 56
    assert len(window_starts(112, 3, 2, 1, 1)) == 56
    # the ceil-mode window that would start in the right padding is dropped: size 4, k 2, s 2, p 1
    assert window_starts(4, 2, 2, 1, 1, True) == [0, 2, 4]
    # PyTorch: (5 + 2 - 2 + 1) // 2 + 1 = 4, but the 4th window would start in the right padding -> 3
    assert window_starts(5, 2, 2, 1, 1, True) == [0, 2, 4]
    assert window_starts(6, 3, 2, 0, 0, True) == [0, 2, 4]


sizes = st.integers(1, 40)
kernels = st.integers(1, 9)
strides = st.integers(1, 5)
dilations = st.integers(1, 4)


@settings(max_examples=300, deadline=None)
@given(h=sizes, w=sizes, kh=kernels, kw=kernels, sh=strides, sw=strides, ph=st.integers(0, 5),
       pw=st.integers(0, 5), dh=dilations, dw=dilations, c=st.integers(1, 4), groups=st.sampled_from([1, 2, 4]),
       out=st.integers(1, 4))
def test_conv2d_output_size(h, w, kh, kw, sh, sw, ph, pw, dh, dw, c, groups, out):
    attrs = {"out": out * groups, "kernel": [kh, kw], "stride": [sh, sw], "padding": [ph, pw],
             "dilation": [dh, dw], "groups": groups}
    cin = c * groups
    rows = window_starts(h, dh * (kh - 1) + 1, sh, ph, ph)
    cols = window_starts(w, dw * (kw - 1) + 1, sw, pw, pw)
    if not rows or not cols:
        with pytest.raises(ShapeError):
            run("conv2d", attrs, image(cin, h, w))
        return
    t = run("conv2d", attrs, image(cin, h, w))
    assert t.shape == ("N", out * groups, len(rows), len(cols))


@settings(max_examples=100, deadline=None)
@given(h=sizes, w=sizes, k=kernels, d=dilations)
def test_conv2d_same_and_valid(h, w, k, d):
    t = run("conv2d", {"out": 3, "kernel": k, "padding": "same", "dilation": d}, image(2, h, w))
    assert t.dims == (3, h, w)
    rows = window_starts(h, d * (k - 1) + 1, 1, 0, 0)
    cols = window_starts(w, d * (k - 1) + 1, 1, 0, 0)
    if rows and cols:
        assert run("conv2d", {"out": 3, "kernel": k, "padding": "valid", "dilation": d},
                   image(2, h, w)).dims == (3, len(rows), len(cols))
    else:
        with pytest.raises(ShapeError):
            run("conv2d", {"out": 3, "kernel": k, "padding": "valid", "dilation": d}, image(2, h, w))


def test_conv2d_same_needs_stride_one():
    with pytest.raises(ShapeError):
        run("conv2d", {"out": 3, "kernel": 3, "padding": "same", "stride": 2}, image(2, 8, 8))


@given(cin=st.integers(1, 12), out=st.integers(1, 12), groups=st.integers(1, 6))
def test_conv2d_groups_must_divide_both_channel_counts(cin, out, groups):
    attrs = {"out": out, "kernel": 1, "groups": groups}
    if cin % groups or out % groups:
        with pytest.raises(ShapeError):
            run("conv2d", attrs, image(cin, 4, 4))
    else:
        assert run("conv2d", attrs, image(cin, 4, 4)).c == out


def test_conv2d_needs_an_image():
    with pytest.raises(ShapeError):
        run("conv2d", {"out": 3, "kernel": 1}, TensorType(("N", 12)))


@settings(max_examples=400, deadline=None)
@given(h=sizes, w=sizes, k=st.integers(1, 7), s=st.one_of(st.none(), strides), p=st.integers(0, 3),
       d=dilations, ceil_mode=st.booleans(), op=st.sampled_from(["maxpool2d", "avgpool2d"]))
def test_pool_output_size(h, w, k, s, p, d, ceil_mode, op):
    assume(2 * p <= k)
    attrs = {"kernel": k, "padding": p, "ceil_mode": ceil_mode}
    if s is not None:
        attrs["stride"] = s
    stride = k if s is None else s  # the stride defaults to the kernel, as in PyTorch
    dil = 1
    if op == "maxpool2d":
        attrs["dilation"] = d
        dil = d
    keff = dil * (k - 1) + 1
    rows = window_starts(h, keff, stride, p, p, ceil_mode)
    cols = window_starts(w, keff, stride, p, p, ceil_mode)
    if not rows or not cols:
        with pytest.raises(ShapeError):
            run(op, attrs, image(3, h, w))
        return
    assert run(op, attrs, image(3, h, w)).shape == ("N", 3, len(rows), len(cols))


@given(k=st.integers(1, 7), p=st.integers(0, 5), op=st.sampled_from(["maxpool2d", "avgpool2d"]))
def test_pool_padding_at_most_half_the_kernel(k, p, op):
    attrs = {"kernel": k, "stride": 1, "padding": p}
    if 2 * p > k:
        with pytest.raises(ShapeError):
            run(op, attrs, image(3, 20, 20))
    else:
        assert run(op, attrs, image(3, 20, 20)).dims == (3, 20 + 2 * p - k + 1, 20 + 2 * p - k + 1)


def test_known_pool_sizes():
    # torchvision GoogLeNet: MaxPool2d(3, 2, ceil_mode=True) on 112 -> 56, on 28 -> 14 (floor would give 13)
    assert run("maxpool2d", {"kernel": 3, "stride": 2, "ceil_mode": True}, image(64, 112, 112)).dims == (64, 56, 56)
    assert run("maxpool2d", {"kernel": 3, "stride": 2, "ceil_mode": True}, image(64, 28, 28)).dims == (64, 14, 14)
    assert run("maxpool2d", {"kernel": 3, "stride": 2}, image(64, 28, 28)).dims == (64, 13, 13)
    # AlexNet: MaxPool2d(3, 2) on 55 -> 27
    assert run("maxpool2d", {"kernel": 3, "stride": 2}, image(64, 55, 55)).dims == (64, 27, 27)


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 20), w=st.integers(1, 20), k=st.integers(1, 6), s=st.integers(1, 4), p=st.integers(0, 4),
       op_=st.integers(0, 3), d=st.integers(1, 3), cin=st.integers(1, 4), out=st.integers(1, 4),
       groups=st.sampled_from([1, 2]))
def test_conv_transpose2d_output_size(h, w, k, s, p, op_, d, cin, out, groups):
    attrs = {"out": out * groups, "kernel": k, "stride": s, "padding": p, "output_padding": op_,
             "dilation": d, "groups": groups}

    def length(n):
        # every input position i scatters to i*s + j*d for j < k; padding crops both ends,
        # output_padding adds to the end
        covered = max(i * s + j * d for i in range(n) for j in range(k)) + 1
        return covered - 2 * p + op_

    x = image(cin * groups, h, w)
    if op_ >= max(s, d) or length(h) <= 0 or length(w) <= 0:
        with pytest.raises(ShapeError):
            run("conv_transpose2d", attrs, x)
        return
    assert run("conv_transpose2d", attrs, x).shape == ("N", out * groups, length(h), length(w))


def test_conv_transpose_known_sizes():
    # U-Net / DCGAN upsampling: k 2 s 2 doubles; k 4 s 2 p 1 doubles
    assert run("conv_transpose2d", {"out": 64, "kernel": 2, "stride": 2}, image(128, 28, 28)).dims == (64, 56, 56)
    assert run("conv_transpose2d", {"out": 3, "kernel": 4, "stride": 2, "padding": 1}, image(8, 32, 32)).dims \
        == (3, 64, 64)


# --- merges and reshapes ---------------------------------------------------------------------------

@given(st.lists(st.integers(1, 8), min_size=1, max_size=5), st.integers(1, 6), st.integers(1, 6))
def test_concat_sums_channels(channels, h, w):
    t = run("concat", {}, *[image(c, h, w) for c in channels])
    assert t.dims == (sum(channels), h, w)


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))
def test_concat_along_height(n, h, w):
    t = run("concat", {"axis": 2}, *[image(3, h + i, w) for i in range(n)])
    assert t.dims == (3, sum(h + i for i in range(n)), w)


def test_concat_mismatch_and_bad_axis():
    with pytest.raises(ShapeError):
        run("concat", {}, image(3, 8, 8), image(3, 8, 7))
    with pytest.raises(ShapeError):
        run("concat", {}, image(3, 8, 8), TensorType(("N", 3)))
    with pytest.raises(ShapeError):
        run("concat", {"axis": 0}, image(3, 8, 8), image(3, 8, 8))
    with pytest.raises(ShapeError):
        run("concat", {"axis": 4}, image(3, 8, 8), image(3, 8, 8))


@given(st.integers(2, 5), st.integers(1, 5), st.integers(1, 5), st.integers(1, 5))
def test_add_needs_one_shape(n, c, h, w):
    assert run("add", {}, *[image(c, h, w)] * n).dims == (c, h, w)
    with pytest.raises(ShapeError):
        run("add", {}, *[image(c, h, w)] * (n - 1), image(c + 1, h, w))
    with pytest.raises(ShapeError):
        run("add", {}, image(c, h, w), image(c, h, w + 1))


def test_add_takes_at_least_two_inputs():
    with pytest.raises(ShapeError):
        run("add", {}, image(3, 4, 4))


def test_mul_broadcasts_the_second_input():
    assert run("mul", {}, image(8, 5, 5), image(8, 1, 1)).dims == (8, 5, 5)
    assert run("mul", {}, image(8, 5, 5), image(8, 5, 5)).dims == (8, 5, 5)
    with pytest.raises(ShapeError):
        run("mul", {}, image(8, 1, 1), image(8, 5, 5))
    with pytest.raises(ShapeError):
        run("mul", {}, image(8, 5, 5), image(4, 1, 1))
    with pytest.raises(ShapeError):
        run("mul", {}, image(8, 5, 5), TensorType(("N", 8)))


@given(st.lists(st.integers(1, 6), min_size=1, max_size=3))
def test_flatten(dims):
    t = run("flatten", {}, TensorType(("N", *dims)))
    assert t.shape == ("N", prod(dims))


@given(st.lists(st.integers(1, 6), min_size=1, max_size=3), st.lists(st.integers(1, 6), min_size=1, max_size=3),
       st.data())
def test_reshape(src, dst, data):
    x = TensorType(("N", *src))
    total = prod(src)
    if prod(dst) == total:
        assert run("reshape", {"shape": dst}, x).dims == tuple(dst)
    else:
        with pytest.raises(ShapeError):
            run("reshape", {"shape": dst}, x)
    # one -1 is inferred when the rest divides the total
    k = data.draw(st.integers(0, len(dst) - 1))
    with_hole = dst[:k] + [-1] + dst[k + 1:]
    rest = prod(d for d in with_hole if d != -1)
    if total % rest == 0:
        expected = dst[:k] + [total // rest] + dst[k + 1:]
        assert run("reshape", {"shape": with_hole}, x).dims == tuple(expected)
    else:
        with pytest.raises(ShapeError):
            run("reshape", {"shape": with_hole}, x)


@pytest.mark.parametrize("shape", [[-1, -1], [0, 4], [-2, 8], []])
def test_reshape_invalid_attrs(shape):
    with pytest.raises((ValidationError, ShapeError)):
        run("reshape", {"shape": shape}, TensorType(("N", 16)))


@given(st.integers(1, 24), st.integers(1, 6))
def test_maxout(c, pieces):
    x = image(c, 3, 3)
    if c % pieces:
        with pytest.raises(ShapeError):
            run("maxout", {"pieces": pieces}, x)
    else:
        assert run("maxout", {"pieces": pieces}, x).dims == (c // pieces, 3, 3)
    if c % pieces == 0:
        assert run("maxout", {"pieces": pieces}, TensorType(("N", c))).dims == (c // pieces,)


def test_linear_needs_flat_input_and_global_pool():
    assert run("linear", {"out": 10}, TensorType(("N", 512))).dims == (10,)
    with pytest.raises(ShapeError):
        run("linear", {"out": 10}, image(512, 1, 1))
    assert run("global_avgpool", {}, image(512, 7, 7)).dims == (512, 1, 1)
    assert run("adaptive_avgpool2d", {"size": [6, 6]}, image(256, 13, 13)).dims == (256, 6, 6)


def test_input_count_is_checked():
    with pytest.raises(ShapeError):
        run("relu", {}, image(3, 4, 4), image(3, 4, 4))
    with pytest.raises(ShapeError):
        run("mul", {}, image(3, 4, 4), image(3, 4, 4), image(3, 4, 4))
