"""Time zoo specs in netspec's CPU backend against ONNX Runtime (on netspec's own ONNX export) and
PyTorch eager (when installed), same weights and input, in one process: medians after a warm-up,
ratios, and netspec's achieved GFLOP/s (2 × MACs / time) beside the machine's measured GEMM rate.
The engines take turns, one warm run each per round (after 0.3 s of untimed runs, so that the
previous engine's spinning threads have stopped), and a ratio is the median of the rounds' ratios,
so that a slow spell of the (shared, noisy) machine falls on both sides of it.

    python tools/bench.py                                    # every zoo spec, batch 1 and 8, 2 threads
    python tools/bench.py resnet18 unet --batch 8 --runs 5 --json out.json
    python tools/bench.py specs/resnet50.yaml my_net.yaml    # spec files, zoo or your own
    python tools/bench.py --train lenet5 resnet18            # training steps (with SGD), images/s, batch 64
    python tools/bench.py --load 1 mobilenet_v1 resnet50     # also timed beside one busy process: slowdowns

The PyTorch side is built from the netspec graph itself (torch.nn.functional per node), so all three
run the identical network; the largest output difference (relative to the output's scale) is printed
as a cross-check. "outside µs": the time a netspec run spends outside its compiled program (checking
the input, the output buffers; backends/cpu/program.py). With --load N, every engine is timed again
beside N busy processes: each one's slowdown, and netspec's over ONNX Runtime's. Compare ratios, not milliseconds: the machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# this checkout's netspec, not another one an editable install points to (an A/B from a git worktree)
sys.path.insert(0, str(ROOT))

import netspec  # noqa: E402
from netspec.spec.errors import SpecError  # noqa: E402
from netspec.threads import set_threads  # noqa: E402
from netspec.weights import init_weights  # noqa: E402
ZOO = ["lenet5", "alexnet", "vgg16", "googlenet", "inception_v2", "resnet18", "resnet50", "mobilenet_v1",
       "efficientnet", "yolov1", "unet"]
# --train: the sizes first (LeNet-5 at its 32×32, ResNet-18 at 32×32 with 10 classes, as on
# CIFAR-10), then the rest of the zoo at 64×64 (AlexNet's smallest input is 63), so that a step at
# batch 64 takes a second or two, not minutes, on 2 cores
TRAIN_PARAMS = {"lenet5": {}, "resnet18": {"resolution": 32, "num_classes": 10}, "mobilenet_v1": {"resolution": 128},
                "alexnet": {"resolution": 63}, "vgg16": {"resolution": 64}, "googlenet": {"resolution": 64},
                "inception_v2": {"resolution": 64}, "resnet50": {"resolution": 64},
                "efficientnet": {"resolution": 64}, "yolov1": {"resolution": 64}, "unet": {"resolution": 64}}
# --train's optimizer, the same in both engines (the issue's): SGD with momentum and weight decay
TRAIN_SGD = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}
# the zoo's names in README.md's tables
TITLES = {"lenet5": "LeNet-5", "alexnet": "AlexNet", "vgg16": "VGG-16", "googlenet": "GoogLeNet",
          "inception_v2": "Inception v2", "resnet18": "ResNet-18", "resnet50": "ResNet-50",
          "mobilenet_v1": "MobileNet v1", "efficientnet": "EfficientNet-B0", "yolov1": "YOLOv1", "unet": "U-Net"}


def torch_forward(graph, weights, device="cpu", train=False):
    """(torch, forward) where forward(x: torch tensor on `device`) → {output: tensor}: the graph in
    PyTorch eager (torch.nn.functional per node, weights moved to `device` once); or None without
    torch. tools/gpu_bench.py builds its cuDNN baseline with this too. With `train`, the train-mode
    graph: batch statistics, dropout, and the trainable weights (`forward.weights`) as leaves that
    collect gradients, as an nn.Module's parameters would."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    from netspec.weights import param_specs
    specs = param_specs(graph)
    w = {k: torch.tensor(np.ascontiguousarray(v)).to(device).requires_grad_(train and specs[k].trainable)
         for k, v in weights.items()}

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
                            w.get(f"{n.name}.weight"), w.get(f"{n.name}.bias"), train, a.momentum, a.eps)

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
        "identity": lambda n, x: x, "dropout": lambda n, x: F.dropout(x, n.attrs.p, train),
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
    active = graph.active("train" if train else "eval")

    def forward(x):
        values = {name: x for name in active.inputs}
        for n in active.nodes:
            xs = [values[i] for i in n.inputs]
            values[n.name] = merges[n.op](n, xs) if n.op in merges else table[n.op](n, xs[0])
        return {o: values[o] for o in active.outputs}
    forward.weights = w
    return torch, forward


def torch_runner(graph, weights, threads: int | None = None):
    """A function running the graph in PyTorch eager on the CPU (numpy in, numpy out), or None without torch."""
    built = torch_forward(graph, weights, "cpu")
    if built is None:
        return None
    torch, forward = built
    if threads:
        torch.set_num_threads(threads)

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return {k: v.numpy() for k, v in forward(torch.from_numpy(x)).items()}
    return run


def torch_trainer(graph, weights, losses: dict[str, str], threads: int | None = None, sgd: dict | None = None):
    """A function doing one training step in PyTorch eager, x and {output: target} (numpy) in:
    gradients cleared, the forward in train mode, the summed losses, backward, and with `sgd`
    ({"lr", "momentum", "weight_decay"}) torch.optim.SGD's update; returns (loss, {key: gradient}).
    None without torch."""
    built = torch_forward(graph, weights, "cpu", train=True)
    if built is None:
        return None
    torch, forward = built
    import torch.nn.functional as F
    if threads:
        torch.set_num_threads(threads)
    trainable = {k: t for k, t in forward.weights.items() if t.requires_grad}
    optimizer = torch.optim.SGD(trainable.values(), **sgd) if sgd else None

    def step(x: np.ndarray, targets: dict[str, np.ndarray]):
        for t in trainable.values():
            t.grad = None  # (optimizer.zero_grad()'s default)
        outputs = forward(torch.from_numpy(x))
        total = sum(F.cross_entropy(outputs[o], torch.from_numpy(targets[o])) if kind == "cross_entropy"
                    else F.mse_loss(outputs[o], torch.from_numpy(targets[o])) for o, kind in losses.items())
        total.backward()
        if optimizer is not None:
            optimizer.step()
        return total.item(), {k: t.grad.numpy() for k, t in trainable.items()}
    return step


def step_peak_bytes(step) -> int:
    """The most memory one call of `step` holds at once beyond what was allocated before it: numpy's
    arrays, as tracemalloc sees them (Numba's kernels allocate through numpy from Python)."""
    import gc
    import tracemalloc
    step()  # (warm: nothing compiles or caches inside the measured call)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del result
    return peak - before


def median_time(fn, x, runs: int) -> float:
    fn(x)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_times(engines: dict, x, runs: int, settle: float = 0.3) -> dict[str, list[float]]:
    """Seconds per run of each engine over `runs` rounds; in each round every engine in turn runs
    untimed for at least `settle` seconds (at least once), then once timed. The untimed runs take
    whatever the previous engine left behind — its worker threads still spinning (OpenMP's and
    OpenBLAS's spin for up to ~0.1–0.2 s after a run), caches full of its data — so the timed run
    is a warm, back-to-back one, as in a steady stream of inferences, for small networks too."""
    times: dict[str, list[float]] = {key: [] for key in engines}
    for _ in range(runs):
        for key, run in engines.items():
            start = time.perf_counter()
            run(x)
            while time.perf_counter() - start < settle:
                run(x)
            t0 = time.perf_counter()
            run(x)
            times[key].append(time.perf_counter() - t0)
    return times


@contextlib.contextmanager
def busy_neighbours(count: int):
    """Within the block, `count` other processes each keep a core busy (`python -c "while True: pass"`):
    a notebook server, a data loader, another worker on the same machine. They have spun for 0.5 s
    when the block starts."""
    import subprocess
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def time_outside_program(exe, x, rounds: int = 30) -> float | None:
    """The time a run spends outside its compiled program (backends/cpu/program.py): `exe.run`
    (checking the input, the arena, the output buffers, the program's own Python) minus the bare
    call of the program's function, medians of alternating calls; None without a program."""
    from netspec.backends.cpu import gemm
    from netspec.backends.cpu.program import key
    program = exe.compiled.get(key(x.shape[0]))
    if not program:
        return None
    arena = exe._arena
    args = program.arguments({exe.input_names[0]: x}, arena.memory, arena.fresh_buffers())
    runs, calls = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        exe.run(x)
        t1 = time.perf_counter()
        # (as Program.run calls it: OpenBLAS's own threads left spinning would slow the next run)
        with gemm._OneBlasThread() if gemm.AVAILABLE else contextlib.nullcontext():
            program.function(*args)
        runs.append(t1 - t0)
        calls.append(time.perf_counter() - t1)
    return max(0.0, statistics.median(runs) - statistics.median(calls))


def ort_runner(graph, weights, batch: int, threads: int):
    """A function running the graph's ONNX export in ONNX Runtime (numpy in, numpy out), or None."""
    try:
        import onnxruntime as ort
        from netspec.interop.onnx_export import export_onnx
    except ImportError:
        return None
    model = export_onnx(graph, weights, batch=batch, check=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (input_name,) = [i.name for i in session.get_inputs()]
    outputs = list(graph.active("eval").outputs)

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(outputs, {input_name: x})))
    return run


def gemm_gflops(threads: int, size: int = 1024, runs: int = 10) -> float:
    """The machine's float32 GEMM rate through numpy's BLAS (the ceiling for im2col + GEMM)."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    with set_threads(threads):
        seconds = median_time(lambda _: a @ a, None, runs)
    return 2 * size**3 / seconds / 1e9


def spec_path(arg: str) -> Path:
    """A spec given as a zoo name (`resnet50`) or as a file's path (`specs/resnet50.yaml`)."""
    path = Path(arg)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return ROOT / "specs" / f"{arg}.yaml"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", help="zoo names or spec files (default: the whole zoo)")
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes (default 1 8; 64 with --train)")
    parser.add_argument("--train", action="store_true",
                        help="time a training step (forward, loss, backward and an SGD update of one batch) "
                             "against PyTorch eager's, in images per second, and its peak memory against "
                             "`summary --mode train`'s plan")
    parser.add_argument("--runs", type=int, default=5,
                        help="rounds; in each, every engine runs untimed for 0.3 s, then once timed; medians are kept")
    parser.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="also time every engine beside N busy processes (`while True: pass`), and report "
                             "each engine's slowdown (loaded / alone) and netspec's over ONNX Runtime's")
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    args.specs = args.specs or (list(TRAIN_PARAMS) if args.train else ZOO)
    args.batch = args.batch or ([64] if args.train else [1, 8])
    graphs = {}
    for arg in args.specs:  # every spec loads before anything is timed: a typo costs no waiting
        path = spec_path(arg)
        try:
            params = TRAIN_PARAMS.get(path.stem, {}) if args.train else {}
            graphs[path.stem if path.stem not in graphs else str(path)] = netspec.load(path, params=params)
        except SpecError as error:
            print(error, file=sys.stderr)
            return 2
    if args.train:
        return train_main(graphs, args)
    gemm = gemm_gflops(args.threads)
    print(f"GEMM (numpy/OpenBLAS sgemm, {args.threads} threads): {gemm:.0f} GFLOP/s")
    print(f"{'spec':<14}{'batch':>6}{'GMACs':>9}{'netspec ms':>12}{'GFLOP/s':>9}{'ORT ms':>9}{'/ORT':>6}"
          f"{'torch ms':>10}{'/torch':>7}{'max |diff|':>11}{'outside µs':>11}" + (LOAD_HEADER if args.load else ""))
    rows = []
    for name, graph in graphs.items():
        weights = init_weights(graph, 0)
        for batch in args.batch:
            x = np.random.default_rng(0).standard_normal((batch,) + next(iter(graph.inputs.values())).dims,
                                                         dtype=np.float32)
            exe = netspec.compile(graph, backend="cpu", weights=weights, progress=False)
            macs = netspec.summary(graph, batch=batch).macs
            engines = {"netspec": exe.run}
            for key, make in (("ort", lambda: ort_runner(graph, weights, batch, args.threads)),
                              ("torch", lambda: torch_runner(graph, weights, args.threads))):
                run = make()
                if run is not None:
                    engines[key] = run
            with set_threads(args.threads):
                times = interleaved_times(engines, x, args.runs)
                outputs = {key: run(x) for key, run in engines.items()}
                # (about a second of it: it tells on small networks; on large ones it is noise)
                outside = time_outside_program(exe, x, max(5, min(30, int(1.0 / statistics.median(times["netspec"])))))
                if args.load:
                    with busy_neighbours(args.load):
                        loaded = interleaved_times(engines, x, args.runs)
            ours = statistics.median(times["netspec"])
            row = {"spec": name, "batch": batch, "macs": macs, "netspec_s": ours,
                   "netspec_gflops": 2 * macs / ours / 1e9, "gemm_gflops": gemm, "outside_s": outside}
            diffs = []
            for key in engines.keys() - {"netspec"}:
                row[f"{key}_s"] = statistics.median(times[key])
                # the ratio: the median of each round's ratio (one round times every engine once, so
                # a slow spell of the machine weighs on both sides of a ratio)
                row[f"{key}_ratio"] = statistics.median(a / b for a, b in zip(times["netspec"], times[key]))
                got, expected = outputs[key], outputs["netspec"]
                diffs += [float(np.abs(expected[k] - got[k]).max() / max(1.0, np.abs(got[k]).max())) for k in got]
            row["max_rel_diff"] = max(diffs) if diffs else None
            if args.load:
                row["load"] = args.load
                for key in engines:  # an engine's slowdown: the median of its loaded times over its median alone
                    row[f"{key}_loaded_s"] = statistics.median(loaded[key])
                    row[f"{key}_slowdown"] = row[f"{key}_loaded_s"] / statistics.median(times[key])
                if "ort" in engines:
                    row["slowdown_ratio"] = row["netspec_slowdown"] / row["ort_slowdown"]
            rows.append(row)
            print(_line(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def train_main(graphs: dict, args) -> int:
    """--train: per spec and batch, a full training step in netspec (exe.grad, then training/optim's
    SGD) and in PyTorch eager (forward, loss, backward, torch.optim.SGD), the same batch, settings
    and starting weights, the engines taking turns (interleaved_times): images per second and the
    median of the rounds' throughput ratios; the step's measured peak memory against the plan; the
    two engines' losses over their first steps."""
    from netspec.passes.autodiff import default_loss
    from netspec.passes.memory import plan_memory
    from netspec.training.optim import make_optimizer
    from netspec.weights import param_specs
    print(f"SGD (lr {TRAIN_SGD['lr']}, momentum {TRAIN_SGD['momentum']}, weight decay {TRAIN_SGD['weight_decay']}), "
          f"{args.threads} threads; ×torch: netspec's images/s over PyTorch's (above 1: netspec is faster)")
    print(f"{'spec':<14}{'input':>8}{'batch':>6}{'netspec img/s':>15}{'torch img/s':>13}{'×torch':>8}"
          f"{'planned MiB':>13}{'measured MiB':>14}{'/plan':>7}{'loss diff':>11}")
    rows = []
    for name, graph in graphs.items():
        weights = init_weights(graph, 0)
        losses = default_loss(graph.active("train"))
        for batch in args.batch:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((batch,) + next(iter(graph.inputs.values())).dims, dtype=np.float32)
            targets = {}
            for output, kind in losses.items():
                shape = (batch,) + graph.type_of(output).dims
                targets[output] = (rng.integers(0, shape[1], (batch,) + shape[2:]) if kind == "cross_entropy"
                                   else rng.standard_normal(shape, dtype=np.float32))
            loss = losses if len(losses) > 1 else next(iter(losses.values()))
            y = targets if len(targets) > 1 else next(iter(targets.values()))
            with set_threads(args.threads):
                # (copies: the optimizer updates netspec's weights in place, each engine starts from these)
                exe = netspec.compile(graph, backend="cpu", mode="train", loss=loss, progress=False,
                                      weights={k: v.copy() for k, v in weights.items()})
                trainable = {k: exe.weights[k] for k, spec in param_specs(graph).items()
                             if spec.trainable and k in exe.weights}
                optimizer = make_optimizer("sgd", trainable, momentum=TRAIN_SGD["momentum"],
                                           weight_decay=TRAIN_SGD["weight_decay"])

                def ours(x):
                    loss, grads = exe.grad(x, y)
                    optimizer.step(grads, TRAIN_SGD["lr"])
                    return loss
                engines = {"netspec": ours}
                step = torch_trainer(graph, weights, losses, args.threads, sgd=TRAIN_SGD)
                if step is not None:
                    engines["torch"] = lambda x: step(x, targets)[0]
                # the first steps from the same weights, untimed (they compile netspec's kernels): the
                # losses must agree, the later ones after the updates too
                first = [{key: run(x) for key, run in engines.items()} for _ in range(FIRST_STEPS)]
                times = interleaved_times(engines, x, args.runs)
                measured = step_peak_bytes(lambda: ours(x))
            planned = plan_memory(exe.training_graph(), batch).arena
            row = {"spec": name, "input": "×".join(map(str, next(iter(graph.inputs.values())).dims[1:])),
                   "batch": batch, "netspec_s": statistics.median(times["netspec"]),
                   "netspec_images_per_s": batch / statistics.median(times["netspec"]), "planned_bytes": planned,
                   "measured_bytes": measured}
            if step is not None:
                row["torch_s"] = statistics.median(times["torch"])
                row["torch_images_per_s"] = batch / row["torch_s"]
                # netspec's images/s over PyTorch's, the median of the rounds' ratios (above 1: netspec faster)
                row["throughput_ratio"] = statistics.median(b / a for a, b in zip(times["netspec"], times["torch"]))
                # (the losses, not the gradients: float32 engines may each take the other side of a ReLU's
                # kink somewhere in a deep network; tests/test_zoo_gradients.py judges the gradients)
                row["loss_rel_diff"] = max(abs(s["netspec"] - s["torch"]) / max(abs(s["torch"]), 1e-12) for s in first)
            rows.append(row)
            print(_train_line(row), flush=True)
    print(f"\nREADME.md's rows (between <!-- train-bench:start --> and <!-- train-bench:end -->):\n{TRAIN_HEADER}")
    for row in rows:
        print(_train_markdown(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


FIRST_STEPS = 3  # steps compared by their losses before the timing (the third after two updates)
TRAIN_HEADER = ("| spec | input | batch | netspec images/s | PyTorch images/s | netspec / PyTorch "
                "| planned MiB | measured MiB | measured / planned |\n|---|---|---|---|---|---|---|---|---|")


def _train_line(row: dict) -> str:
    mib = 2.0 ** 20
    theirs = f"{row['torch_images_per_s']:.1f}" if "torch_images_per_s" in row else "-"
    ratio = f"{row['throughput_ratio']:.2f}" if "throughput_ratio" in row else "-"
    diff = f"{row['loss_rel_diff']:.1e}" if "loss_rel_diff" in row else "-"
    return (f"{row['spec']:<14}{row['input']:>8}{row['batch']:>6}{row['netspec_images_per_s']:>15.1f}{theirs:>13}"
            f"{ratio:>8}{row['planned_bytes'] / mib:>13.1f}{row['measured_bytes'] / mib:>14.1f}"
            f"{row['measured_bytes'] / row['planned_bytes']:>7.2f}{diff:>11}")


def _train_markdown(row: dict) -> str:
    """`row` as a row of README.md's training table (TRAIN_HEADER)."""
    mib = 2.0 ** 20

    def rate(key):
        return "-" if key not in row else f"{row[key]:,.0f}" if row[key] >= 100 else f"{row[key]:.1f}"
    ratio = f"{row['throughput_ratio']:.2f}" if "throughput_ratio" in row else "-"
    return (f"| {TITLES.get(row['spec'], row['spec'])} | {row['input']} | {row['batch']} "
            f"| {rate('netspec_images_per_s')} | {rate('torch_images_per_s')} | {ratio} "
            f"| {row['planned_bytes'] / mib:,.1f} | {row['measured_bytes'] / mib:,.1f} "
            f"| {row['measured_bytes'] / row['planned_bytes']:.2f} |")


LOAD_HEADER = f"{'loaded ms':>11}{'×alone':>8}{'ORT ×alone':>11}{'/ORT×':>7}"


def _line(row: dict) -> str:
    def ms(key):
        return f"{row[key] * 1e3:.1f}" if key in row else "-"

    def ratio(key):
        return f"{row[key.replace('_s', '_ratio')]:.2f}" if key in row else "-"
    diff = f"{row['max_rel_diff']:.1e}" if row.get("max_rel_diff") is not None else "-"
    outside = f"{row['outside_s'] * 1e6:.0f}" if row.get("outside_s") is not None else "-"
    return (f"{row['spec']:<14}{row['batch']:>6}{row['macs'] / 1e9:>9.2f}{ms('netspec_s'):>12}"
            f"{row['netspec_gflops']:>9.1f}{ms('ort_s'):>9}{ratio('ort_s'):>6}{ms('torch_s'):>10}"
            f"{ratio('torch_s'):>7}{diff:>11}{outside:>11}" + (_load_columns(row) if "load" in row else ""))


def _load_columns(row: dict) -> str:
    """--load's columns: netspec's loaded time and slowdown, ONNX Runtime's, and their ratio."""
    theirs = f"{row['ort_slowdown']:.2f}" if "ort_slowdown" in row else "-"
    ratio = f"{row['slowdown_ratio']:.2f}" if "slowdown_ratio" in row else "-"
    return f"{row['netspec_loaded_s'] * 1e3:>11.1f}{row['netspec_slowdown']:>8.2f}{theirs:>11}{ratio:>7}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
