"""Time zoo specs in netspec's CPU backend against PyTorch eager (when torch is installed) on the
same weights and input, in one process; medians after a warm-up, with ratios.

    python tools/bench.py                         # every zoo spec at batch 1
    python tools/bench.py resnet18 unet --batch 8 --runs 5 --json out.json

The PyTorch side is built from the netspec graph itself (torch.nn.functional per node), so both
run the identical network; the largest output difference is printed as a cross-check.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import netspec
from netspec.weights import init_weights

ROOT = Path(__file__).resolve().parent.parent
ZOO = ["lenet5", "alexnet", "vgg16", "googlenet", "inception_v2", "resnet18", "resnet50", "mobilenet_v1",
       "efficientnet", "yolov1", "unet"]


def torch_forward(graph, weights, device="cpu"):
    """(torch, forward) where forward(x: torch tensor on `device`) → {output: tensor}: the graph in
    PyTorch eager (eval mode, torch.nn.functional per node, weights moved to `device` once); or None
    without torch. tools/gpu_bench.py builds its cuDNN baseline with this too."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    w = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in weights.items()}

    def pads(a):
        t, l, b, r = a.pads
        return (l, r, t, b)

    def conv(n, x):
        a = n.attrs
        x = F.pad(x, pads(a))
        return F.conv2d(x, w[f"{n.name}.weight"], w.get(f"{n.name}.bias"), a.stride, 0, a.dilation, a.groups)

    def pool(n, x, kind):
        a = n.attrs
        if kind == "max":
            return F.max_pool2d(x, a.kernel, a.stride, a.padding, a.dilation, ceil_mode=a.ceil_mode)
        return F.avg_pool2d(x, a.kernel, a.stride, a.padding, a.ceil_mode, a.count_include_pad)

    def bn(n, x):
        a = n.attrs
        return F.batch_norm(x, w[f"{n.name}.running_mean"], w[f"{n.name}.running_var"],
                            w.get(f"{n.name}.weight"), w.get(f"{n.name}.bias"), False, a.momentum, a.eps)

    def crop(x, size):
        top, left = (x.shape[2] - size[0]) // 2, (x.shape[3] - size[1]) // 2
        return x[:, :, top:top + size[0], left:left + size[1]]

    table = {
        "conv2d": conv,
        "conv_transpose2d": lambda n, x: F.conv_transpose2d(
            x, w[f"{n.name}.weight"], w.get(f"{n.name}.bias"), n.attrs.stride, n.attrs.padding,
            n.attrs.output_padding, n.attrs.groups, n.attrs.dilation),
        "maxpool2d": lambda n, x: pool(n, x, "max"),
        "avgpool2d": lambda n, x: pool(n, x, "avg"),
        "global_avgpool": lambda n, x: F.adaptive_avg_pool2d(x, 1),
        "adaptive_avgpool2d": lambda n, x: F.adaptive_avg_pool2d(x, n.attrs.size),
        "batchnorm2d": bn,
        "lrn": lambda n, x: F.local_response_norm(x, n.attrs.size, n.attrs.alpha, n.attrs.beta, n.attrs.k),
        "linear": lambda n, x: F.linear(x, w[f"{n.name}.weight"], w.get(f"{n.name}.bias")),
        "identity": lambda n, x: x, "dropout": lambda n, x: x,
        "relu": lambda n, x: F.relu(x), "relu6": lambda n, x: F.relu6(x), "sigmoid": lambda n, x: torch.sigmoid(x),
        "tanh": lambda n, x: torch.tanh(x), "silu": lambda n, x: F.silu(x), "hardswish": lambda n, x: F.hardswish(x),
        "leaky_relu": lambda n, x: F.leaky_relu(x, n.attrs.slope), "elu": lambda n, x: F.elu(x, n.attrs.alpha),
        "softmax": lambda n, x: F.softmax(x, n.attrs.axis),
        "maxout": lambda n, x: x.view(x.shape[0], -1, n.attrs.pieces, *x.shape[2:]).amax(2),
        "flatten": lambda n, x: torch.flatten(x, 1),
        "reshape": lambda n, x: x.reshape(x.shape[0], *n.attrs.shape),
        "center_crop": lambda n, x: crop(x, n.attrs.size),
    }
    merges = {"add": lambda n, xs: sum(xs[1:], xs[0]), "mul": lambda n, xs: xs[0] * xs[1],
              "concat": lambda n, xs: torch.cat(xs, n.attrs.axis)}
    active = graph.active("eval")

    def forward(x):
        values = {name: x for name in active.inputs}
        for n in active.nodes:
            xs = [values[i] for i in n.inputs]
            values[n.name] = merges[n.op](n, xs) if n.op in merges else table[n.op](n, xs[0])
        return {o: values[o] for o in active.outputs}
    return torch, forward


def torch_runner(graph, weights):
    """A function running the graph in PyTorch eager on the CPU (numpy in, numpy out), or None without torch."""
    built = torch_forward(graph, weights, "cpu")
    if built is None:
        return None
    torch, forward = built

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return {k: v.numpy() for k, v in forward(torch.from_numpy(x)).items()}
    return run


def median_time(fn, x, runs: int) -> float:
    fn(x)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", default=ZOO)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'spec':<14} {'MACs':>16} {'netspec ms':>11} {'torch ms':>9} {'ratio':>7} {'max |diff|':>11}")
    for name in args.specs:
        graph = netspec.load(ROOT / "specs" / f"{name}.yaml")
        weights = init_weights(graph, 0)
        x = np.random.default_rng(0).standard_normal((args.batch,) + next(iter(graph.inputs.values())).dims,
                                                     dtype=np.float32)
        exe = netspec.compile(graph, backend="cpu", weights=weights, progress=False)
        ours = median_time(exe.run, x, args.runs)
        row = {"spec": name, "batch": args.batch, "macs": netspec.summary(graph, batch=args.batch).macs,
               "netspec_s": ours}
        torch_run = torch_runner(graph, weights)
        if torch_run is not None:
            import torch
            if args.threads:
                torch.set_num_threads(args.threads)
            row["torch_s"] = median_time(torch_run, x, args.runs)
            a, b = exe.run(x), torch_run(x)
            row["max_abs_diff"] = max(float(np.abs(a[k] - b[k]).max()) for k in a)
        rows.append(row)
        t = row.get("torch_s")
        print(f"{name:<14} {row['macs']:>16,} {ours * 1e3:>11.1f} {t * 1e3 if t else float('nan'):>9.1f} "
              f"{ours / t if t else float('nan'):>7.2f} {row.get('max_abs_diff', float('nan')):>11.2e}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
