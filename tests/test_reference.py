"""The plain-numpy reference implementations of the ops (`OpDef.reference`).

(a) For every registered op, the reference's output has the shape its shape rule infers, on
    hypothesis-generated valid shapes and attributes (an op without a reference, or without a case
    here, fails).
(b) The references agree with deliberately naive implementations written here: explicit Python loops
    over output positions and window elements, on tiny shapes.
(c) Where torch is importable, cross-checks against torch.nn.functional (skipped otherwise).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import netspec.ops as ops
from netspec.ir.types import TensorType
from netspec.ops import RunContext, ShapeError
from netspec.ops.registry import infer_output

RTOL = ATOL = 1e-4

# --------------------------------------------------------------------------------------------------
# Cases: for each op, a function draw -> (attributes as written in a spec, input shapes with the batch
# dimension, mode). The shapes and attributes are meant to be valid; the odd invalid draw is rejected.
# --------------------------------------------------------------------------------------------------

CASES = {}


def case(name):
    def register(f):
        CASES[name] = f
        return f
    return register


def _int(draw, lo, hi):
    return draw(st.integers(lo, hi))


def _pair(draw, lo, hi):
    return (_int(draw, lo, hi), _int(draw, lo, hi))


def _spec_pair(p):
    """A pair as a spec writes it: one int when both agree, else [h, w]."""
    return p[0] if p[0] == p[1] else list(p)


def _mode(draw):
    return draw(st.sampled_from(["eval", "train"]))


def _floats(draw, lo, hi):
    return draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))


def _image(draw, c=None, lo=1, hi=6):
    return (_int(draw, 1, 2), c if c is not None else _int(draw, 1, 4), _int(draw, lo, hi), _int(draw, lo, hi))


def _any_shape(draw, min_rank=2):
    rank = _int(draw, min_rank, 4)
    return (_int(draw, 1, 2),) + tuple(_int(draw, 1, 5) for _ in range(rank - 1))


def _same_pads(kernel, dilation):
    """PyTorch's padding='same' (stride 1): the odd pixel goes bottom/right. (top, left, bottom, right)"""
    th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
    return (th // 2, tw // 2, th - th // 2, tw - tw // 2)


@case("conv2d")
def _conv2d_case(draw):
    g = _int(draw, 1, 3)
    cin, out = g * _int(draw, 1, 3), g * _int(draw, 1, 3)
    kernel, dilation = _pair(draw, 1, 4), _pair(draw, 1, 3)
    how = draw(st.sampled_from(["explicit", "same", "valid"]))
    if how == "same":
        stride, padding, pads = (1, 1), "same", _same_pads(kernel, dilation)
    else:
        stride = _pair(draw, 1, 3)
        p = (0, 0) if how == "valid" else _pair(draw, 0, 2)
        padding, pads = ("valid" if how == "valid" else _spec_pair(p)), (p[0], p[1], p[0], p[1])
    keff = [dilation[i] * (kernel[i] - 1) + 1 for i in (0, 1)]
    h = max(1, keff[0] - pads[0] - pads[2]) + _int(draw, 0, 4)
    w = max(1, keff[1] - pads[1] - pads[3]) + _int(draw, 0, 4)
    attrs = dict(out=out, kernel=_spec_pair(kernel), stride=_spec_pair(stride), padding=padding,
                 dilation=_spec_pair(dilation), groups=g, bias=draw(st.booleans()))
    return attrs, [(_int(draw, 1, 2), cin, h, w)], _mode(draw)


@case("conv_transpose2d")
def _conv_transpose2d_case(draw):
    g = _int(draw, 1, 3)
    cin, out = g * _int(draw, 1, 3), g * _int(draw, 1, 3)
    kernel, stride, dilation = _pair(draw, 1, 3), _pair(draw, 1, 3), _pair(draw, 1, 2)
    out_pad = tuple(_int(draw, 0, max(stride[i], dilation[i]) - 1) for i in (0, 1))
    size = _pair(draw, 1, 4)
    full = [(size[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1 + out_pad[i] for i in (0, 1)]
    padding = tuple(_int(draw, 0, min(2, (full[i] - 1) // 2)) for i in (0, 1))
    attrs = dict(out=out, kernel=_spec_pair(kernel), stride=_spec_pair(stride), padding=_spec_pair(padding),
                 output_padding=_spec_pair(out_pad), dilation=_spec_pair(dilation), groups=g,
                 bias=draw(st.booleans()))
    return attrs, [(_int(draw, 1, 2), cin) + size], _mode(draw)


def _pool_case(draw, dilated):
    kernel = _pair(draw, 1, 4)
    stride = draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)))
    padding = tuple(_int(draw, 0, kernel[i] // 2) for i in (0, 1))
    dilation = _pair(draw, 1, 3) if dilated else (1, 1)
    keff = [dilation[i] * (kernel[i] - 1) + 1 for i in (0, 1)]
    h = max(1, keff[0] - 2 * padding[0]) + _int(draw, 0, 5)
    w = max(1, keff[1] - 2 * padding[1]) + _int(draw, 0, 5)
    attrs = dict(kernel=_spec_pair(kernel), padding=_spec_pair(padding), ceil_mode=draw(st.booleans()))
    if stride is not None:
        attrs["stride"] = _spec_pair(stride)
    if dilated:
        attrs["dilation"] = _spec_pair(dilation)
    else:
        attrs["count_include_pad"] = draw(st.booleans())
    return attrs, [(_int(draw, 1, 2), _int(draw, 1, 3), h, w)], _mode(draw)


@case("maxpool2d")
def _maxpool_case(draw):
    return _pool_case(draw, dilated=True)


@case("avgpool2d")
def _avgpool_case(draw):
    return _pool_case(draw, dilated=False)


@case("global_avgpool")
def _global_case(draw):
    return {}, [_image(draw)], _mode(draw)


@case("adaptive_avgpool2d")
def _adaptive_case(draw):
    return dict(size=_spec_pair(_pair(draw, 1, 5))), [_image(draw, hi=9)], _mode(draw)


@case("batchnorm2d")
def _batchnorm_case(draw):
    shape = _image(draw) if draw(st.booleans()) else (_int(draw, 1, 4), _int(draw, 1, 4))
    mode = _mode(draw)
    if mode == "train" and math.prod(shape) // shape[1] < 2:
        mode = "eval"  # training needs more than one value per channel, as in PyTorch
    attrs = dict(eps=_floats(draw, 1e-5, 1e-2), momentum=_floats(draw, 0.0, 1.0), affine=draw(st.booleans()))
    return attrs, [shape], mode


@case("lrn")
def _lrn_case(draw):
    attrs = dict(size=_int(draw, 1, 6), alpha=_floats(draw, 1e-5, 1.0), beta=_floats(draw, 0.0, 1.0),
                 k=_floats(draw, 0.5, 2.0))
    return attrs, [_image(draw, c=_int(draw, 1, 7))], _mode(draw)


def _elementwise_case(attrs_fn=lambda draw: {}):
    def f(draw):
        return attrs_fn(draw), [_any_shape(draw)], _mode(draw)
    return f


for _name in ("identity", "relu", "relu6", "sigmoid", "tanh", "silu", "hardswish"):
    CASES[_name] = _elementwise_case()
CASES["leaky_relu"] = _elementwise_case(lambda draw: dict(slope=_floats(draw, 0.0, 1.0)))
CASES["elu"] = _elementwise_case(lambda draw: dict(alpha=_floats(draw, 0.0, 2.0)))
CASES["dropout"] = _elementwise_case(lambda draw: dict(p=_floats(draw, 0.0, 0.9)))


@case("softmax")
def _softmax_case(draw):
    shape = _any_shape(draw)
    return dict(axis=_int(draw, -len(shape), len(shape) - 1)), [shape], _mode(draw)


@case("maxout")
def _maxout_case(draw):
    pieces = _int(draw, 1, 4)
    shape = list(_any_shape(draw))
    shape[1] = pieces * _int(draw, 1, 3)
    return dict(pieces=pieces), [tuple(shape)], _mode(draw)


@case("add")
def _add_case(draw):
    shape = _any_shape(draw)
    return {}, [shape] * _int(draw, 2, 4), _mode(draw)


@case("mul")
def _mul_case(draw):
    shape = _any_shape(draw)
    other = (shape[0],) + tuple(d if draw(st.booleans()) else 1 for d in shape[1:])
    return {}, [shape, other], _mode(draw)


@case("concat")
def _concat_case(draw):
    shape = _any_shape(draw)
    axis = _int(draw, 1, len(shape) - 1)
    shapes = [shape[:axis] + (_int(draw, 1, 4),) + shape[axis + 1:] for _ in range(_int(draw, 1, 3))]
    return dict(axis=axis), shapes, _mode(draw)


@case("flatten")
def _flatten_case(draw):
    return {}, [_any_shape(draw)], _mode(draw)


@case("reshape")
def _reshape_case(draw):
    factors = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))

    def grouping():  # the factors multiplied together in consecutive runs, in a random order
        dims, cur = [], 1
        for f in draw(st.permutations(factors)):
            cur *= f
            if draw(st.booleans()):
                dims.append(cur)
                cur = 1
        return dims + [cur]

    target = grouping()
    if draw(st.booleans()):
        target[_int(draw, 0, len(target) - 1)] = -1
    return dict(shape=target), [(_int(draw, 1, 2),) + tuple(grouping())], _mode(draw)


@case("center_crop")
def _center_crop_case(draw):
    shape = _image(draw, hi=8)
    size = (_int(draw, 1, shape[2]), _int(draw, 1, shape[3]))
    return dict(size=_spec_pair(size)), [shape], _mode(draw)


@case("linear")
def _linear_case(draw):
    return dict(out=_int(draw, 1, 6), bias=draw(st.booleans())), [(_int(draw, 1, 3), _int(draw, 1, 6))], _mode(draw)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------

def random_params(op, attrs, types, rng):
    params = {}
    for name, spec in op.params(attrs, types).items():
        params[name] = rng.standard_normal(spec.shape).astype(np.float32)
    if "running_var" in params:
        params["running_var"] = (np.abs(params["running_var"]) + 0.5).astype(np.float32)
    return params


def run(name, attrs, inputs, params=None, mode="eval", seed=0):
    op = ops.get(name)
    a = op.attrs(**attrs) if isinstance(attrs, dict) else attrs
    return op.reference(a, [np.asarray(x, dtype=np.float32) for x in inputs], params if params is not None else {},
                        RunContext(mode=mode, rng=np.random.default_rng(seed)))


def close(actual, expected):
    assert actual.dtype == np.float32
    assert actual.shape == np.shape(expected), (actual.shape, np.shape(expected))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------------------
# (a) every op: a reference, and its shape is the shape rule's
# --------------------------------------------------------------------------------------------------

OP_NAMES = [op.name for op in ops.all_ops()]


def test_every_op_has_a_reference_and_a_case():
    missing = [op.name for op in ops.all_ops() if op.reference is None]
    assert not missing, f"ops without a reference: {missing}"
    uncovered = [name for name in OP_NAMES if name not in CASES]
    assert not uncovered, f"ops without a case in tests/test_reference.py: {uncovered}"


@pytest.mark.parametrize("name", OP_NAMES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=st.data())
def test_reference_shape_matches_shape_rule(name, data):
    op = ops.get(name)
    assert op.reference is not None, f"{name} has no reference"
    assert name in CASES, f"{name} has no case in tests/test_reference.py"
    attr_values, shapes, mode = CASES[name](data.draw)
    attrs = op.attrs(**attr_values)
    types = [TensorType(tuple(s)) for s in shapes]
    try:
        expected = infer_output(op, attrs, types)
    except ShapeError:
        assume(False)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    before = [x.copy() for x in inputs]
    params = random_params(op, attrs, types, rng)
    y = op.reference(attrs, inputs, params, RunContext(mode=mode, rng=np.random.default_rng(1)))
    assert isinstance(y, np.ndarray)
    assert y.dtype == np.float32
    assert y.shape == expected.shape, f"{name} {attr_values} on {shapes}: reference {y.shape}, rule {expected}"
    for x, x0 in zip(inputs, before):
        np.testing.assert_array_equal(x, x0)  # inputs are never written
    for x in inputs:
        assert not np.shares_memory(y, x)  # the output is a fresh array
    if name != "maxpool2d":  # a max-pool window may lie wholly in the padding (-inf), as in PyTorch
        assert np.isfinite(y).all()


def test_aliases_share_the_reference():
    assert ops.get("swish").reference is ops.get("silu").reference


# --------------------------------------------------------------------------------------------------
# (b) naive implementations: loops over output positions and window elements
# --------------------------------------------------------------------------------------------------

def naive_conv2d(x, w, b, stride, pads, dilation, groups):
    n_, c_, h_, w_ = x.shape
    o_, cg, kh, kw = w.shape
    top, left, bottom, right = pads
    oh = (h_ + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w_ + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    og = o_ // groups
    y = np.zeros((n_, o_, oh, ow))
    for n in range(n_):
        for o in range(o_):
            g = o // og
            for i in range(oh):
                for j in range(ow):
                    acc = 0.0 if b is None else float(b[o])
                    for c in range(cg):
                        for ki in range(kh):
                            for kj in range(kw):
                                r = i * stride[0] - top + ki * dilation[0]
                                s = j * stride[1] - left + kj * dilation[1]
                                if 0 <= r < h_ and 0 <= s < w_:
                                    acc += float(x[n, g * cg + c, r, s]) * float(w[o, c, ki, kj])
                    y[n, o, i, j] = acc
    return y


def naive_conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups):
    """Scatter form: every input element times every kernel tap adds into one output element."""
    n_, c_, h_, w_ = x.shape
    _, og, kh, kw = w.shape
    cg = c_ // groups
    oh = (h_ - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + 1 + output_padding[0]
    ow = (w_ - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + 1 + output_padding[1]
    y = np.zeros((n_, og * groups, oh, ow))
    for n in range(n_):
        for c in range(c_):
            g = c // cg
            for r in range(h_):
                for s in range(w_):
                    for o in range(og):
                        for ki in range(kh):
                            for kj in range(kw):
                                i = r * stride[0] - padding[0] + ki * dilation[0]
                                j = s * stride[1] - padding[1] + kj * dilation[1]
                                if 0 <= i < oh and 0 <= j < ow:
                                    y[n, g * og + o, i, j] += float(x[n, c, r, s]) * float(w[c, o, ki, kj])
    if b is not None:
        for o in range(og * groups):
            y[:, o] += float(b[o])
    return y


def pool_out(size, kernel, stride, pad, dilation, ceil_mode):
    """PyTorch's pooling_output_shape."""
    num = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (-(-num // stride) if ceil_mode else num // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def naive_maxpool(x, kernel, stride, padding, dilation, ceil_mode):
    n_, c_, h_, w_ = x.shape
    oh = pool_out(h_, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow = pool_out(w_, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    y = np.zeros((n_, c_, oh, ow))
    for n in range(n_):
        for c in range(c_):
            for i in range(oh):
                for j in range(ow):
                    best = -math.inf
                    for ki in range(kernel[0]):
                        for kj in range(kernel[1]):
                            r = i * stride[0] - padding[0] + ki * dilation[0]
                            s = j * stride[1] - padding[1] + kj * dilation[1]
                            if 0 <= r < h_ and 0 <= s < w_:
                                best = max(best, float(x[n, c, r, s]))
                    y[n, c, i, j] = best
    return y


def naive_avgpool(x, kernel, stride, padding, ceil_mode, count_include_pad):
    """PyTorch's avg_pool2d loop: the divisor with padding stops at the padded border."""
    n_, c_, h_, w_ = x.shape
    oh = pool_out(h_, kernel[0], stride[0], padding[0], 1, ceil_mode)
    ow = pool_out(w_, kernel[1], stride[1], padding[1], 1, ceil_mode)
    y = np.zeros((n_, c_, oh, ow))
    for n in range(n_):
        for c in range(c_):
            for i in range(oh):
                for j in range(ow):
                    r0 = i * stride[0] - padding[0]
                    s0 = j * stride[1] - padding[1]
                    r1 = min(r0 + kernel[0], h_ + padding[0])
                    s1 = min(s0 + kernel[1], w_ + padding[1])
                    padded_count = (r1 - r0) * (s1 - s0)
                    total, inside = 0.0, 0
                    for r in range(r0, r1):
                        for s in range(s0, s1):
                            if 0 <= r < h_ and 0 <= s < w_:
                                total += float(x[n, c, r, s])
                                inside += 1
                    y[n, c, i, j] = total / (padded_count if count_include_pad else inside)
    return y


def naive_adaptive(x, size):
    n_, c_, h_, w_ = x.shape
    y = np.zeros((n_, c_) + tuple(size))
    for n in range(n_):
        for c in range(c_):
            for i in range(size[0]):
                r0, r1 = (i * h_) // size[0], -((-(i + 1) * h_) // size[0])
                for j in range(size[1]):
                    s0, s1 = (j * w_) // size[1], -((-(j + 1) * w_) // size[1])
                    vals = [float(x[n, c, r, s]) for r in range(r0, r1) for s in range(s0, s1)]
                    y[n, c, i, j] = sum(vals) / len(vals)
    return y


def naive_lrn(x, size, alpha, beta, k):
    n_, c_, h_, w_ = x.shape
    y = np.zeros(x.shape)
    for n in range(n_):
        for c in range(c_):
            for r in range(h_):
                for s in range(w_):
                    sq = 0.0
                    for c2 in range(c - size // 2, c + (size - 1) // 2 + 1):
                        if 0 <= c2 < c_:
                            sq += float(x[n, c2, r, s]) ** 2
                    y[n, c, r, s] = float(x[n, c, r, s]) / (k + alpha / size * sq) ** beta
    return y


def naive_batchnorm(x, weight, bias, mean, var, eps, momentum, train):
    """Returns (y, new running mean, new running var)."""
    c_ = x.shape[1]
    y = np.zeros(x.shape)
    new_mean, new_var = np.array(mean, dtype=np.float64), np.array(var, dtype=np.float64)
    for c in range(c_):
        vals = [float(v) for v in np.asarray(x[:, c]).ravel()]
        if train:
            m = sum(vals) / len(vals)
            v = sum((t - m) ** 2 for t in vals) / len(vals)
            unbiased = sum((t - m) ** 2 for t in vals) / (len(vals) - 1)
            new_mean[c] = (1 - momentum) * mean[c] + momentum * m
            new_var[c] = (1 - momentum) * var[c] + momentum * unbiased
        else:
            m, v = float(mean[c]), float(var[c])
        for idx in np.ndindex(*y[:, c].shape):
            full = (idx[0], c) + idx[1:]
            t = (float(x[full]) - m) / math.sqrt(v + eps)
            y[full] = t * float(weight[c]) + float(bias[c]) if weight is not None else t
    return y, new_mean, new_var


# conv2d ------------------------------------------------------------------------------------------

CONV_CASES = [
    # (attrs, input shape)
    (dict(out=4, kernel=3), (1, 2, 5, 5)),
    (dict(out=3, kernel=3, stride=2, padding=1), (2, 2, 7, 6)),
    (dict(out=2, kernel=[2, 3], stride=[1, 2], padding=[0, 1], bias=False), (2, 3, 5, 7)),
    (dict(out=4, kernel=3, padding="same"), (1, 2, 5, 4)),
    (dict(out=2, kernel=4, padding="same"), (2, 1, 6, 5)),  # even kernel: the odd pixel bottom/right
    (dict(out=2, kernel=[2, 3], padding="same", dilation=[3, 2]), (1, 2, 5, 6)),
    (dict(out=2, kernel=3, padding="valid", dilation=2), (1, 1, 7, 7)),
    (dict(out=4, kernel=3, groups=2, padding=1), (2, 4, 5, 5)),
    (dict(out=3, kernel=3, groups=3, stride=2, padding=1), (1, 3, 7, 7)),  # depthwise
    (dict(out=6, kernel=2, groups=3, dilation=[2, 1], stride=[2, 3], padding=[1, 2]), (2, 3, 9, 8)),
    (dict(out=2, kernel=1), (3, 4, 3, 3)),  # pointwise
]


def _conv_pads(a):
    if a.padding == "same":
        return _same_pads(a.kernel, a.dilation)
    if a.padding == "valid":
        return (0, 0, 0, 0)
    return (a.padding[0], a.padding[1], a.padding[0], a.padding[1])


def check_conv2d(attrs, shape, seed=0):
    op = ops.get("conv2d")
    a = op.attrs(**attrs)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    params = random_params(op, a, [TensorType(shape)], rng)
    y = run("conv2d", a, [x], params)
    close(y, naive_conv2d(x, params["weight"], params.get("bias"), a.stride, _conv_pads(a), a.dilation, a.groups))
    return y


@pytest.mark.parametrize("attrs,shape", CONV_CASES)
def test_conv2d_matches_naive(attrs, shape):
    y = check_conv2d(attrs, shape)
    if attrs.get("padding") == "same":
        assert y.shape[2:] == shape[2:]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_conv2d_matches_naive_random(data):
    attrs, shapes, _ = _conv2d_case(data.draw)
    try:
        infer_output(ops.get("conv2d"), ops.get("conv2d").attrs(**attrs), [TensorType(shapes[0])])
    except ShapeError:
        assume(False)
    check_conv2d(attrs, shapes[0])


# conv_transpose2d ----------------------------------------------------------------------------------

CONV_T_CASES = [
    (dict(out=3, kernel=3), (1, 2, 3, 3)),
    (dict(out=2, kernel=2, stride=2), (2, 3, 3, 4)),  # the U-Net up-convolution
    (dict(out=2, kernel=3, stride=2, padding=1, output_padding=1), (1, 2, 4, 3)),
    (dict(out=4, kernel=[3, 2], stride=[2, 3], padding=[1, 0], output_padding=[1, 2], groups=2), (2, 4, 3, 3)),
    (dict(out=2, kernel=3, dilation=2, padding=2, output_padding=1, bias=False), (1, 3, 4, 4)),
    (dict(out=3, kernel=3, stride=1, dilation=[2, 3], output_padding=[1, 2], groups=3), (1, 3, 3, 2)),
]


def check_conv_transpose2d(attrs, shape, seed=0):
    op = ops.get("conv_transpose2d")
    a = op.attrs(**attrs)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    params = random_params(op, a, [TensorType(shape)], rng)
    y = run("conv_transpose2d", a, [x], params)
    close(y, naive_conv_transpose2d(x, params["weight"], params.get("bias"), a.stride, a.padding,
                                    a.output_padding, a.dilation, a.groups))
    assert y.shape == infer_output(op, a, [TensorType(shape)]).shape


@pytest.mark.parametrize("attrs,shape", CONV_T_CASES)
def test_conv_transpose2d_matches_naive(attrs, shape):
    check_conv_transpose2d(attrs, shape)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_conv_transpose2d_matches_naive_random(data):
    attrs, shapes, _ = _conv_transpose2d_case(data.draw)
    check_conv_transpose2d(attrs, shapes[0])


# pooling -------------------------------------------------------------------------------------------

MAXPOOL_CASES = [
    (dict(kernel=2), (1, 2, 4, 4)),
    (dict(kernel=3, stride=2, padding=1), (2, 2, 7, 6)),  # ResNet's stem
    (dict(kernel=3, stride=2, ceil_mode=True), (1, 1, 6, 6)),  # GoogLeNet: the last window overhangs
    (dict(kernel=2, stride=2, ceil_mode=True), (1, 2, 5, 7)),
    (dict(kernel=3, stride=2, padding=1, ceil_mode=True), (1, 1, 6, 5)),  # the last window must start inside
    (dict(kernel=2, stride=1, dilation=2, padding=1), (1, 2, 5, 5)),
    (dict(kernel=[3, 2], stride=[2, 1], padding=[1, 0], dilation=[2, 3], ceil_mode=True), (2, 1, 8, 7)),
]


def _pool_attrs(name, attrs):
    return ops.get(name).attrs(**attrs)


@pytest.mark.parametrize("attrs,shape", MAXPOOL_CASES)
def test_maxpool_matches_naive(attrs, shape):
    a = _pool_attrs("maxpool2d", attrs)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    close(run("maxpool2d", a, [x]), naive_maxpool(x, a.kernel, a.stride, a.padding, a.dilation, a.ceil_mode))


AVGPOOL_CASES = [
    (dict(kernel=2), (1, 2, 4, 4)),
    (dict(kernel=3, stride=2, padding=1), (2, 1, 7, 6)),
    (dict(kernel=3, stride=2, padding=1, count_include_pad=False), (2, 1, 7, 6)),
    (dict(kernel=3, stride=2, ceil_mode=True), (1, 1, 6, 6)),
    (dict(kernel=3, stride=2, padding=1, ceil_mode=True), (1, 2, 6, 6)),  # overhang beyond the padding
    (dict(kernel=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (1, 2, 6, 6)),
    (dict(kernel=[2, 4], stride=[3, 3], padding=[1, 2], ceil_mode=True), (1, 1, 5, 8)),
    (dict(kernel=3, stride=1, padding=1), (1, 1, 3, 3)),  # Inception's pool branch
]


@pytest.mark.parametrize("attrs,shape", AVGPOOL_CASES)
def test_avgpool_matches_naive(attrs, shape):
    a = _pool_attrs("avgpool2d", attrs)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    close(run("avgpool2d", a, [x]),
          naive_avgpool(x, a.kernel, a.stride, a.padding, a.ceil_mode, a.count_include_pad))


def test_avgpool_divisor_by_hand():
    # 1×1×3×3 of ones, kernel 2, stride 2, padding 1, ceil mode: 2×2 windows over rows/cols [-1,0], [1,2], ...
    x = np.ones((1, 1, 3, 3), dtype=np.float32)
    a = dict(kernel=2, stride=2, padding=1, ceil_mode=True)
    y = run("avgpool2d", a, [x])
    assert y.shape == (1, 1, 2, 2)
    # window (0, 0) holds 1 input element of 4 padded positions; window (1, 1) holds 4 of 4
    close(y, np.array([[[[0.25, 0.5], [0.5, 1.0]]]]))
    close(run("avgpool2d", dict(a, count_include_pad=False), [x]), np.ones((1, 1, 2, 2)))
    # 6 wide, kernel 3, stride 2, padding 1, ceil mode: windows start at cols -1, 1, 3, 5; the last covers col 5
    # (input), col 6 (padding) and col 7, past the padded border, which the divisor does not count
    x = np.ones((1, 1, 1, 6), dtype=np.float32)
    y = run("avgpool2d", dict(kernel=[1, 3], stride=[1, 2], padding=[0, 1], ceil_mode=True), [x])
    assert y.shape == (1, 1, 1, 4)
    close(y, np.array([[[[2 / 3, 1.0, 1.0, 0.5]]]]))  # last: cols 5 (input) and 6 (padding) count; 7 not


def _pool_draw_valid(data, name):
    attrs, shapes, _ = CASES[name](data.draw)
    op = ops.get(name)
    a = op.attrs(**attrs)
    try:
        infer_output(op, a, [TensorType(shapes[0])])
    except ShapeError:
        assume(False)
    return a, np.random.default_rng(0).standard_normal(shapes[0]).astype(np.float32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_maxpool_matches_naive_random(data):
    a, x = _pool_draw_valid(data, "maxpool2d")
    y = run("maxpool2d", a, [x])
    close(y, naive_maxpool(x, a.kernel, a.stride, a.padding, a.dilation, a.ceil_mode))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_avgpool_matches_naive_random(data):
    a, x = _pool_draw_valid(data, "avgpool2d")
    close(run("avgpool2d", a, [x]), naive_avgpool(x, a.kernel, a.stride, a.padding, a.ceil_mode, a.count_include_pad))


@pytest.mark.parametrize("size,shape", [((1, 1), (1, 2, 5, 4)), ((2, 2), (1, 1, 5, 5)), ((3, 2), (2, 2, 7, 5)),
                                        ((6, 6), (1, 1, 4, 4)), ((4, 3), (1, 1, 10, 7)), ((7, 7), (1, 1, 7, 7))])
def test_adaptive_matches_naive(size, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    close(run("adaptive_avgpool2d", dict(size=list(size)), [x]), naive_adaptive(x, size))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_adaptive_matches_naive_random(data):
    attrs, shapes, _ = _adaptive_case(data.draw)
    a = ops.get("adaptive_avgpool2d").attrs(**attrs)
    x = np.random.default_rng(0).standard_normal(shapes[0]).astype(np.float32)
    close(run("adaptive_avgpool2d", a, [x]), naive_adaptive(x, a.size))


def test_global_avgpool():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    expected = np.zeros((2, 3, 1, 1))
    for n in range(2):
        for c in range(3):
            expected[n, c, 0, 0] = sum(float(v) for v in x[n, c].ravel()) / 20
    close(run("global_avgpool", {}, [x]), expected)


# normalization -------------------------------------------------------------------------------------

@pytest.mark.parametrize("size,alpha,beta,k,c", [(5, 1e-4, 0.75, 2.0, 7), (5, 1e-4, 0.75, 1.0, 3),
                                                 (4, 0.5, 0.75, 1.0, 6), (1, 0.3, 0.5, 1.0, 2),
                                                 (3, 2.0, 1.0, 0.5, 4), (6, 1.0, 0.6, 1.0, 2)])
def test_lrn_matches_naive(size, alpha, beta, k, c):
    x = (np.random.default_rng(0).standard_normal((2, c, 3, 2)) * 3).astype(np.float32)
    close(run("lrn", dict(size=size, alpha=alpha, beta=beta, k=k), [x]), naive_lrn(x, size, alpha, beta, k))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (5, 4), (1, 2, 3, 1), (3, 1, 1, 1)])
@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_matches_naive(shape, mode, affine):
    op = ops.get("batchnorm2d")
    a = op.attrs(eps=1e-3, momentum=0.3, affine=affine)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    params = random_params(op, a, [TensorType(shape)], rng)
    assert ("weight" in params) == affine
    mean0, var0 = params["running_mean"].copy(), params["running_var"].copy()
    y = run("batchnorm2d", a, [x], params, mode=mode)
    y_ref, mean1, var1 = naive_batchnorm(x, params.get("weight"), params.get("bias"), mean0, var0, 1e-3, 0.3,
                                         mode == "train")
    close(y, y_ref)
    close(params["running_mean"], mean1)
    close(params["running_var"], var1)
    if mode == "eval":
        np.testing.assert_array_equal(params["running_mean"], mean0)
        np.testing.assert_array_equal(params["running_var"], var0)


def test_batchnorm_train_replaces_running_stats():
    op = ops.get("batchnorm2d")
    a = op.attrs(momentum=0.1)
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32) + 5
    params = random_params(op, a, [TensorType(x.shape)], np.random.default_rng(1))
    old_mean, old_var = params["running_mean"], params["running_var"]
    kept_mean, kept_var = old_mean.copy(), old_var.copy()
    y = run("batchnorm2d", a, [x], params, mode="train")
    assert params["running_mean"] is not old_mean and params["running_var"] is not old_var
    np.testing.assert_array_equal(old_mean, kept_mean)  # replaced, not written in place
    np.testing.assert_array_equal(old_var, kept_var)
    assert params["running_mean"].dtype == np.float32 and params["running_mean"].shape == (2,)
    assert params["running_var"].dtype == np.float32 and params["running_var"].shape == (2,)
    # normalised with batch statistics: each channel of (y - bias) / weight has mean 0 and biased var ≈ 1
    z = (y - params["bias"].reshape(1, -1, 1, 1)) / params["weight"].reshape(1, -1, 1, 1)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(z.var(axis=(0, 2, 3)), 1, atol=1e-3)
    n = 4 * 3 * 3
    np.testing.assert_allclose(params["running_var"],
                               0.9 * kept_var + 0.1 * x.astype(np.float64).var(axis=(0, 2, 3)) * n / (n - 1),
                               rtol=1e-5)


def test_batchnorm_train_needs_two_values_per_channel():
    op = ops.get("batchnorm2d")
    a = op.attrs()
    params = random_params(op, a, [TensorType((1, 3))], np.random.default_rng(0))
    with pytest.raises(ValueError):
        run("batchnorm2d", a, [np.ones((1, 3))], params, mode="train")


# dropout -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics(p):
    x = np.ones((4, 16, 64, 64), dtype=np.float32)
    y = run("dropout", dict(p=p), [x], mode="train", seed=7)
    dropped = y == 0
    assert abs(dropped.mean() - p) < 0.01
    np.testing.assert_allclose(y[~dropped], 1 / (1 - p), rtol=1e-6)
    # the mask is exactly rng.random(shape, float32) >= p, so every backend drops the same elements
    keep = np.random.default_rng(7).random(x.shape, dtype=np.float32) >= p
    np.testing.assert_array_equal(~dropped, keep)
    # same seed → same mask; another seed → another
    np.testing.assert_array_equal(y, run("dropout", dict(p=p), [x], mode="train", seed=7))
    assert not np.array_equal(y, run("dropout", dict(p=p), [x], mode="train", seed=8))


def test_dropout_scales_values():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    y = run("dropout", dict(p=0.25), [x], mode="train", seed=3)
    keep = np.random.default_rng(3).random(x.shape, dtype=np.float32) >= 0.25
    close(y, np.where(keep, x / 0.75, 0.0))


def test_dropout_identity():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(run("dropout", dict(p=0.5), [x], mode="eval"), x)
    np.testing.assert_array_equal(run("dropout", dict(p=0.0), [x], mode="train"), x)
    assert np.array_equal(run("dropout", {}, [x], mode="eval"), x)


# activations ---------------------------------------------------------------------------------------

def _scalar_sigmoid(v):
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


SCALAR = {
    "identity": lambda v, a: v,
    "relu": lambda v, a: max(v, 0.0),
    "relu6": lambda v, a: min(max(v, 0.0), 6.0),
    "sigmoid": lambda v, a: _scalar_sigmoid(v),
    "tanh": lambda v, a: math.tanh(v),
    "leaky_relu": lambda v, a: v if v > 0 else a.slope * v,
    "elu": lambda v, a: v if v > 0 else a.alpha * (math.exp(v) - 1),
    "silu": lambda v, a: v * _scalar_sigmoid(v),
    "hardswish": lambda v, a: v * min(max(v + 3, 0.0), 6.0) / 6,
}


@pytest.mark.parametrize("name,attrs", [("identity", {}), ("relu", {}), ("relu6", {}), ("sigmoid", {}),
                                        ("tanh", {}), ("leaky_relu", {}), ("leaky_relu", dict(slope=0.2)),
                                        ("elu", {}), ("elu", dict(alpha=0.5)), ("silu", {}), ("swish", {}),
                                        ("hardswish", {})])
def test_activations_match_naive(name, attrs):
    op = ops.get(name)
    a = op.attrs(**attrs)
    x = np.concatenate([np.linspace(-8, 8, 97), [-3, 0, 3, 6, -1e-3, 1e-3]]).astype(np.float32).reshape(1, -1)
    scalar = SCALAR[op.name]
    expected = np.array([[scalar(float(v), a) for v in x[0]]])
    close(run(name, a, [x]), expected)


def test_sigmoid_family_is_stable_for_large_inputs():
    x = np.array([[-1e4, -800.0, -100.0, 0.0, 100.0, 800.0, 1e4]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        s = run("sigmoid", {}, [x])
        silu = run("silu", {}, [x])
        elu = run("elu", {}, [x])
        soft = run("softmax", {}, [x])
    close(s, [[0, 0, 0, 0.5, 1, 1, 1]])
    close(silu, [[0, 0, 0, 0, 100, 800, 1e4]])
    close(elu, [[-1, -1, -1, 0, 100, 800, 1e4]])
    close(soft, [[0, 0, 0, 0, 0, 0, 1]])


def naive_softmax(x, axis):
    axis %= x.ndim
    y = np.zeros(x.shape)
    other = x.shape[:axis] + x.shape[axis + 1:]
    for idx in np.ndindex(*other):
        line = [idx[:axis] + (k,) + idx[axis:] for k in range(x.shape[axis])]
        m = max(float(x[i]) for i in line)
        total = sum(math.exp(float(x[i]) - m) for i in line)
        for i in line:
            y[i] = math.exp(float(x[i]) - m) / total
    return y


@pytest.mark.parametrize("shape,axis", [((2, 5), 1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), -1), ((3, 4, 2), 2),
                                        ((2, 3, 4, 5), 0), ((2, 3, 4, 5), -3)])
def test_softmax_matches_naive(shape, axis):
    x = (np.random.default_rng(0).standard_normal(shape) * 10 + 500).astype(np.float32)
    y = run("softmax", dict(axis=axis), [x])
    close(y, naive_softmax(x, axis))
    np.testing.assert_allclose(y.sum(axis=axis), 1, rtol=1e-5)


@pytest.mark.parametrize("shape,pieces", [((2, 6, 3, 3), 2), ((2, 6, 3, 3), 3), ((3, 8), 4), ((1, 4, 5), 1),
                                          ((2, 6, 1, 2), 6)])
def test_maxout_matches_naive(shape, pieces):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = np.zeros((shape[0], shape[1] // pieces) + shape[2:])
    for idx in np.ndindex(*expected.shape):
        n, j, rest = idx[0], idx[1], idx[2:]
        expected[idx] = max(float(x[(n, j * pieces + q) + rest]) for q in range(pieces))
    close(run("maxout", dict(pieces=pieces), [x]), expected)


# tensor plumbing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,size", [((1, 2, 6, 6), (4, 4)), ((2, 1, 7, 8), (4, 5)), ((1, 1, 5, 5), (5, 5)),
                                        ((1, 3, 64, 64), (56, 57)), ((1, 1, 4, 3), (1, 1))])
def test_center_crop_matches_naive(shape, size):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    top, left = (shape[2] - size[0]) // 2, (shape[3] - size[1]) // 2
    expected = np.zeros(shape[:2] + size)
    for n in range(shape[0]):
        for c in range(shape[1]):
            for i in range(size[0]):
                for j in range(size[1]):
                    expected[n, c, i, j] = x[n, c, top + i, left + j]
    close(run("center_crop", dict(size=list(size)), [x]), expected)


def test_center_crop_odd_margin_goes_bottom_right():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    close(run("center_crop", dict(size=3), [x]), x[:, :, 0:3, 0:3])  # margin 1: the extra row/col at bottom/right
    close(run("center_crop", dict(size=2), [x]), x[:, :, 1:3, 1:3])


def test_merges_and_reshapes():
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal((2, 3, 4, 4)).astype(np.float32) for _ in range(3))
    close(run("add", {}, [a, b]), a.astype(np.float64) + b)
    close(run("add", {}, [a, b, c]), a.astype(np.float64) + b + c)
    gate = rng.standard_normal((2, 3, 1, 1)).astype(np.float32)
    expected = np.zeros(a.shape)
    for idx in np.ndindex(*a.shape):
        expected[idx] = float(a[idx]) * float(gate[idx[0], idx[1], 0, 0])
    close(run("mul", {}, [a, gate]), expected)
    close(run("mul", {}, [a, b]), a.astype(np.float64) * b)
    d = rng.standard_normal((2, 5, 4, 4)).astype(np.float32)
    cat = run("concat", {}, [a, d])
    close(cat[:, :3], a)
    close(cat[:, 3:], d)
    close(run("concat", dict(axis=3), [a, b]), np.concatenate([a, b], axis=3))
    flat = run("flatten", {}, [a])
    assert flat.shape == (2, 48)
    assert flat[1, 1 * 16 + 2 * 4 + 3] == a[1, 1, 2, 3]  # channel-major, as torch.flatten(x, 1)
    r = run("reshape", dict(shape=[4, -1]), [a])
    assert r.shape == (2, 4, 12)
    close(r.reshape(2, -1), flat)


def test_linear_matches_naive():
    op = ops.get("linear")
    rng = np.random.default_rng(0)
    for bias in (True, False):
        a = op.attrs(out=4, bias=bias)
        x = rng.standard_normal((3, 5)).astype(np.float32)
        params = random_params(op, a, [TensorType((3, 5))], rng)
        expected = np.zeros((3, 4))
        for n in range(3):
            for o in range(4):
                expected[n, o] = sum(float(x[n, i]) * float(params["weight"][o, i]) for i in range(5))
                if bias:
                    expected[n, o] += float(params["bias"][o])
        close(run("linear", a, [x], params), expected)


# --------------------------------------------------------------------------------------------------
# (c) torch cross-checks (skipped where torch is not importable)
# --------------------------------------------------------------------------------------------------

def draw_case(data, name):
    """(op, attributes, input types, mode): a case drawn from CASES[name] whose shapes the op accepts
    (hypothesis rejects the odd invalid draw)."""
    attrs, shapes, mode = CASES[name](data.draw)
    op = ops.get(name)
    a = op.attrs(**attrs)
    types = [TensorType(tuple(s)) for s in shapes]
    try:
        infer_output(op, a, types)
    except ShapeError:
        assume(False)
    return op, a, types, mode


def _draw_valid(data, name):
    op, a, types, mode = draw_case(data, name)
    shapes = [t.shape for t in types]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shapes[0]).astype(np.float32)
    return op, a, x, random_params(op, a, types, rng), mode


def _t(array):
    import torch
    return None if array is None else torch.from_numpy(np.asarray(array, dtype=np.float64).copy())


TORCH_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch pads a copy for an even 'same' kernel
@TORCH_SETTINGS
@given(data=st.data())
def test_conv2d_against_torch(data):
    pytest.importorskip("torch")
    import torch.nn.functional as F
    op, a, x, p, _ = _draw_valid(data, "conv2d")
    padding = a.padding if isinstance(a.padding, str) else tuple(a.padding)
    expected = F.conv2d(_t(x), _t(p["weight"]), _t(p.get("bias")), stride=a.stride, padding=padding,
                        dilation=a.dilation, groups=a.groups)
    close(run("conv2d", a, [x], p), expected.numpy())


@TORCH_SETTINGS
@given(data=st.data())
def test_conv_transpose2d_against_torch(data):
    pytest.importorskip("torch")
    import torch.nn.functional as F
    op, a, x, p, _ = _draw_valid(data, "conv_transpose2d")
    expected = F.conv_transpose2d(_t(x), _t(p["weight"]), _t(p.get("bias")), stride=a.stride, padding=a.padding,
                                  output_padding=a.output_padding, groups=a.groups, dilation=a.dilation)
    close(run("conv_transpose2d", a, [x], p), expected.numpy())


@TORCH_SETTINGS
@given(data=st.data())
def test_maxpool_against_torch(data):
    pytest.importorskip("torch")
    import torch.nn.functional as F
    op, a, x, _, _ = _draw_valid(data, "maxpool2d")
    expected = F.max_pool2d(_t(x), a.kernel, a.stride, a.padding, a.dilation, ceil_mode=a.ceil_mode)
    close(run("maxpool2d", a, [x]), expected.numpy())


@TORCH_SETTINGS
@given(data=st.data())
def test_avgpool_against_torch(data):
    pytest.importorskip("torch")
    import torch.nn.functional as F
    op, a, x, _, _ = _draw_valid(data, "avgpool2d")
    expected = F.avg_pool2d(_t(x), a.kernel, a.stride, a.padding, ceil_mode=a.ceil_mode,
                            count_include_pad=a.count_include_pad)
    close(run("avgpool2d", a, [x]), expected.numpy())


@TORCH_SETTINGS
@given(data=st.data())
def test_adaptive_avgpool_against_torch(data):
    pytest.importorskip("torch")
    import torch.nn.functional as F
    op, a, x, _, _ = _draw_valid(data, "adaptive_avgpool2d")
    close(run("adaptive_avgpool2d", a, [x]), F.adaptive_avg_pool2d(_t(x), a.size).numpy())


@TORCH_SETTINGS
@given(data=st.data())
def test_lrn_against_torch(data):
    pytest.importorskip("torch")
    import torch.nn.functional as F
    op, a, x, _, _ = _draw_valid(data, "lrn")
    expected = F.local_response_norm(_t(x), a.size, alpha=a.alpha, beta=a.beta, k=a.k)
    close(run("lrn", a, [x]), expected.numpy())


@TORCH_SETTINGS
@given(data=st.data())
def test_batchnorm_against_torch(data):
    pytest.importorskip("torch")
    import torch.nn.functional as F
    op, a, x, p, mode = _draw_valid(data, "batchnorm2d")
    running_mean, running_var = _t(p["running_mean"]), _t(p["running_var"])
    expected = F.batch_norm(_t(x), running_mean, running_var, _t(p.get("weight")), _t(p.get("bias")),
                            training=mode == "train", momentum=a.momentum, eps=a.eps)
    close(run("batchnorm2d", a, [x], p, mode=mode), expected.numpy())
    close(p["running_mean"], running_mean.numpy())  # torch updates its running statistics in place
    close(p["running_var"], running_var.numpy())


@pytest.mark.parametrize("name,attrs,fn", [
    ("sigmoid", {}, "sigmoid"), ("silu", {}, "silu"), ("hardswish", {}, "hardswish"), ("elu", dict(alpha=0.7), "elu"),
    ("leaky_relu", dict(slope=0.2), "leaky_relu"), ("relu6", {}, "relu6"), ("softmax", dict(axis=1), "softmax")])
def test_activations_against_torch(name, attrs, fn):
    pytest.importorskip("torch")
    import torch.nn.functional as F
    x = (np.random.default_rng(0).standard_normal((2, 4, 3, 3)) * 5).astype(np.float32)
    kwargs = {"elu": dict(alpha=0.7), "leaky_relu": dict(negative_slope=0.2), "softmax": dict(dim=1)}.get(fn, {})
    close(run(name, attrs, [x]), getattr(F, fn)(_t(x), **kwargs).numpy())
