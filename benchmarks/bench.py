"""Speed of the original S5 pipeline against the default fast path, measured in one process on real MNIST.

    python benchmarks/bench.py                         # training images/s of both, their ratio, and the
                                                       # fast path's fraction of the machine's matmul limit
    python benchmarks/bench.py --mode full             # whole runs of the S5 recipe (fast path), seeds 1-5:
                                                       # accuracy and wall time, mean +- sd, min, max
    python benchmarks/bench.py --mode full --recipe onecycle --seeds 10
    python benchmarks/bench.py --mode full --pipeline s5 --seeds 1
    python benchmarks/bench.py --compile off           # also the fast path eager (on CUDA it is graphed)
    python benchmarks/bench.py --precision fp32        # the fast path in another precision (fp16: slow on CPUs)
    python benchmarks/bench.py --mode full --precision fp16 --compile off
    python benchmarks/bench.py --mode augment          # batched augmentation: torch vs kornia vs torchvision v2
    python benchmarks/bench.py --mode profile --compile off  # where a fast-path step's time goes

Set MNIST_DATA_DIR (or --data-dir) to the folder holding MNIST/raw/.
"""

import argparse
import collections
import dataclasses
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import utils  # noqa: E402
from model import Net  # noqa: E402
from s5.cpu_memory import keep_freed_memory  # noqa: E402
from s5.runs import train_recipe  # noqa: E402
from utils import (  # noqa: E402
    augment,
    check_output,
    get_data_loaders,
    get_device,
    get_recipe,
    make_optimizer,
    normalize,
    sample_augmentation,
    set_seed,
    train,
)

RESULTS = Path(__file__).resolve().parent / "results"


def hardware(device, precision=None):
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        info = Path("/proc/cpuinfo").read_text()
        first_cpu = (line.split(":", 1) for line in info.split("\n\n")[0].splitlines() if ":" in line)
        fields = {key.strip(): value.strip() for key, value in first_cpu}
        cpu = fields.get("model name", cpu)
        flags = [f for f in ("avx512_bf16", "amx_bf16") if f in fields.get("flags", "").split()]
        # Family and model tell CPU generations apart that share a name ("AMD EPYC": Zen 3 or Zen 4, ...).
        generation = f"family {fields['cpu family']} model {fields['model']}, " if "cpu family" in fields else ""
        cpu += f" ({generation}{', '.join(flags) or 'no native bf16'})"
    text = f"{cpu}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    chosen = f"precision {precision}" if precision not in (None, "auto") else f"autocast {utils.autocast_dtype(device)}"
    return f"{text}; device {device}, {chosen}"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mb():
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, workers


def timed_training(args, device, pipeline, compile_mode):
    """A fresh Net trained on `pipeline`'s loader as the S5 recipe's step (--precision for the fast path):
    3 batches of warm-up (any capture or compile falls there), then --repeats timed runs of --batches
    batches. Returns the seconds of each run, and a function that trains --batches batches more."""
    recipe = get_recipe("s5", pipeline, precision=args.precision if pipeline == "fast" else None)
    step = {"precision": recipe.precision, "channels_last": recipe.channels_last, "compile_mode": compile_mode}
    if pipeline == "fast" and device.type == "cpu":
        keep_freed_memory()
    set_seed(0)
    train_loader, _ = get_data_loaders(args.batch_size, args.data_dir, device, pipeline)
    model = Net().to(device)
    optimizer = make_optimizer(model, recipe)

    def more(batches):
        train(model, device, itertools.islice(train_loader, batches), optimizer, **step)
        sync(device)

    more(3)
    seconds = []
    for _ in range(args.repeats):
        sync(device)
        start = time.perf_counter()
        more(args.batches)
        seconds.append(time.perf_counter() - start)
    return seconds, lambda: more(args.batches)


def throughput(args, device):
    """Median training images/s over `repeats` runs of `batches` batches, each from a fresh iterator.

    The original S5 pipeline runs first: the fast path keeps freed memory for reuse (keep_freed_memory),
    a setting of the whole process that the original must not get. With --compile, the fast path runs a
    third time under that mode (on CUDA `--compile off` is the eager step; a compile or capture falls in
    the warm-up, untimed). --precision sets the fast path's (the original's is fp32).
    """
    default_precision = args.precision in (None, "auto")
    fast_path = "fast path (default)" if default_precision else f"fast path, {args.precision}"
    setups = {"original S5 pipeline": ("s5", "off"), fast_path: ("fast", "auto")}
    if args.compile not in (None, "auto"):
        setups[f"{fast_path}, --compile {args.compile}"] = ("fast", args.compile)
    medians = {}
    for name, (pipeline, compile_mode) in setups.items():
        seconds, _ = timed_training(args, device, pipeline, compile_mode)
        rates = [args.batches * args.batch_size / s for s in seconds]
        print("".join(f"  {name}: {rate:.0f} images/s\n" for rate in rates), end="", flush=True)
        medians[name] = statistics.median(rates)
        own, workers = peak_rss_mb()
        print(f"{name}: median {medians[name]:.0f} training images/s over {args.repeats} runs of "
              f"{args.batches} batches; peak RSS so far {own:.0f} MB (+ largest worker {workers:.0f} MB)", end="")
        if device.type == "cuda":
            print(f", CUDA peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB", end="")
            torch.cuda.reset_peak_memory_stats(device)
        print(flush=True)
    slow, fast, *other = medians.values()
    other_name = f"--compile {args.compile}"  # the third setup's, when there is one
    ratios = f"ratio fast / original: {fast / slow:.2f}x"
    if other:
        ratios += f"; {other_name} / original: {other[0] / slow:.2f}x, {other_name} / fast: {other[0] / fast:.2f}x"
    print(ratios)
    if not default_precision:  # the limit below is the default precision's
        return {"images_per_s": medians, "ratio": fast / slow}
    dtype = utils.autocast_dtype(device) or torch.float32
    rate = matmul_rate(device, dtype, args.matmul_size, args.repeats)
    flops = training_flops_per_image(device)
    limit = rate / flops
    print(f"matmul rate: {rate / 1e12:.3f} TFLOP/s ({args.matmul_size}^2 {str(dtype).removeprefix('torch.')}); "
          f"training costs {flops / 1e6:.0f} MFLOP per image, so the limit is {limit:.0f} images/s: "
          f"the fast path reaches {fast / limit:.0%} of it, the original pipeline {slow / limit:.0%}"
          + (f", the fast path with {other_name} {other[0] / limit:.0%}" if other else ""))
    return {"images_per_s": medians, "ratio": fast / slow, "matmul_tflops": rate / 1e12,
            "training_mflop_per_image": flops / 1e6, "fraction_of_limit": fast / limit}


def matmul_rate(device, dtype, size=4096, repeats=5):
    """The machine's dense matmul rate in FLOP/s (median of `repeats`): the ceiling for a conv net's step."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def training_flops_per_image(device, batch_size=64):
    """FLOPs of one training step (forward and backward) per image, counted by torch's FlopCounterMode."""
    model = Net().to(device)
    data = torch.randn(batch_size, 1, 28, 28, device=device)
    target = torch.randint(0, 10, (batch_size,), device=device)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.nll_loss(model(data), target).backward()
    return counter.get_total_flops() / batch_size


def full_run(args, device):
    """Whole runs of the recipe, one per seed, each timed end to end (loading the data included); prints
    and saves (JSON) every run and, over the seeds, mean, sd, min and max of each result. With --compile
    the first seed's time includes the compile; later seeds reuse its captures (same process)."""
    recipe = get_recipe(args.recipe, args.pipeline, epochs=args.epochs, precision=args.precision)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    # The original pipeline's step is eager unless --compile says otherwise; the fast path's, the default (auto).
    compile_mode = args.compile or ("off" if args.pipeline == "s5" else "auto")
    variant = "".join(f"_{value}" for value in (args.precision, args.compile) if value not in (None, "auto"))
    name = f"{args.recipe}_{args.pipeline}_{device.type}{variant}_seeds{seeds[0]}-{seeds[-1]}.json"
    out = Path(args.out or RESULTS / name)
    check_output(out, args.overwrite)
    if args.pipeline == "fast" and device.type == "cpu":
        keep_freed_memory()
    runs = []
    for seed in seeds:
        sync(device)
        start = time.perf_counter()
        train_loader, test_loader = get_data_loaders(recipe.batch_size, args.data_dir, device, args.pipeline,
                                                     seed=seed)
        history = train_recipe(utils, recipe, device, train_loader, test_loader, seed=seed, compile_mode=compile_mode)
        sync(device)
        runs.append({"seed": seed, "seconds": round(time.perf_counter() - start, 2),
                     "seconds_per_epoch": round(statistics.median(history["seconds"]), 3),
                     "best_test_acc": max(history["test_acc"]), "final_test_acc": history["test_acc"][-1],
                     "test_acc": history["test_acc"]})
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "test_acc"}), flush=True)
    summary = {key: spread([run[key] for run in runs])
               for key in ("best_test_acc", "final_test_acc", "seconds", "seconds_per_epoch")}
    for key, s in summary.items():
        sd = f" ± {s['sd']:.2f}" if "sd" in s else ""
        print(f"{key} over {len(runs)} seeds: {s['mean']:.2f}{sd} (min {s['min']:.2f}, max {s['max']:.2f})")
    result = {"hardware": hardware(device, args.precision), "pipeline": args.pipeline, "recipe": args.recipe,
              "compile": compile_mode, "hyperparameters": dataclasses.asdict(recipe), "summary": summary, "runs": runs}
    utils.atomic_write(out, json.dumps(result, indent=1).encode())
    print(f"saved {out}")
    return result


class OpTimer(TorchDispatchMode):
    """The wall-clock time of every aten op run under it, by op and shape of its first tensor argument. On a
    CPU ops run one after another, so this is what each costs in a step; torch.profiler's own bookkeeping
    made the max-pool's ops look up to 10x costlier there (AMD EPYC)."""

    def __init__(self):
        super().__init__()
        self.seconds = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        shape = list(first.shape) if first is not None else []
        self.seconds[f"{func.overloadpacket.__name__} {shape}"] += time.perf_counter() - start
        return out


def profile_step(args, device):
    """Where the fast path's training step spends its time (S5 recipe, --precision, --compile): milliseconds
    per step timed as is, then each op's share over the same number of batches: on a CPU timed op by op
    (OpTimer), elsewhere by torch.profiler. On CUDA it prints the GPU's busy time and the kernels launched
    per step: a step that takes much longer than the GPU is busy is bound by the CPU launching kernels, the
    cost that CUDA graphs remove."""
    compile_mode = args.compile or "auto"
    seconds, more = timed_training(args, device, "fast", compile_mode)
    result = {"ms_per_step": statistics.median(seconds) * 1e3 / args.batches}
    print(f"step (--compile {compile_mode}): median {result['ms_per_step']:.2f} ms over {args.repeats} runs of "
          f"{args.batches} batches of {args.batch_size} (without the profiler)")
    if device.type == "cpu":
        return {**result, "ops_ms_per_step": time_ops(more, args.batches, args.repeats)}
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        more()
    events = prof.key_averages()
    sort_by = "self_cpu_time_total"
    if device.type == "cuda":
        on_gpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        result["gpu_busy_ms_per_step"] = sum(e.self_device_time_total for e in on_gpu) / 1e3 / args.batches
        result["kernels_per_step"] = sum(e.count for e in on_gpu) / args.batches
        launches = [e for e in events if e.key.startswith(("cudaLaunch", "cuLaunch", "cudaGraphLaunch"))]
        result["launches_per_step"] = sum(e.count for e in launches) / args.batches
        print(f"GPU busy {result['gpu_busy_ms_per_step']:.2f} ms per step ({result['kernels_per_step']:.0f} "
              f"kernels and copies, {result['launches_per_step']:.0f} launches from the CPU)")
        sort_by = "self_device_time_total"
    print(events.table(sort_by=sort_by, row_limit=15, max_name_column_width=60))
    return result


def time_ops(more, steps, repeats):
    """Milliseconds per step of each aten op (by op and the shape of its first argument) while `more()` runs
    `steps` steps on the CPU, the median of `repeats` runs, busiest first; prints them, totalled by op, then
    op by op."""
    runs = []
    for _ in range(repeats):
        with OpTimer() as timer:
            more()
        runs.append(timer.seconds)
    ops = {op: 1e3 * statistics.median(run[op] for run in runs) / steps for op in runs[0]}
    ops = dict(sorted(ops.items(), key=lambda item: -item[1]))
    in_ops = sum(ops.values())
    by_name = collections.Counter()
    for op, ms in ops.items():
        by_name[op.split()[0]] += ms
    print(f"timed op by op: {in_ops:.2f} ms per step in aten ops (the timer adds its own overhead); by op:")
    for op, ms in by_name.most_common(6):
        print(f"{ms:9.2f} ms {100 * ms / in_ops:5.1f}%  {op}")
    print("by op and the shape of its first argument:")
    for op, ms in list(ops.items())[:20]:
        print(f"{ms:9.2f} ms {100 * ms / in_ops:5.1f}%  {op}")
    return ops


def spread(values):
    """Mean, sample sd (from two values on), min and max."""
    s = {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
    if len(values) > 1:
        s["sd"] = statistics.stdev(values)
    return s


def augment_speed(args, device):
    """Per-sample rotation + zoom of one batch: torch affine_grid/grid_sample vs kornia vs torchvision v2."""
    images = torch.rand(args.batch_size, 1, 28, 28, device=device)
    angles, zoom = sample_augmentation(args.batch_size, torch.Generator(device).manual_seed(0), device)
    candidates = {"torch affine_grid + grid_sample (utils.augment)": lambda: augment(images, angles, zoom)}
    where = zoom[:, None, None, None]
    try:
        import kornia.geometry.transform as KT

        factor = torch.full((args.batch_size, 2), 28 / 22, device=device)

        def with_kornia():  # the same steps as utils.augment: bilinear zoom where drawn, then nearest rotation
            if device.type == "cpu":
                index = zoom.nonzero().squeeze(1)
                zoomed = KT.scale(images[index], factor[index], mode="bilinear", align_corners=False)
                zoomed = images.index_copy(0, index, zoomed)
            else:
                zoomed = torch.where(where, KT.scale(images, factor, mode="bilinear", align_corners=False), images)
            return KT.rotate(zoomed, angles, mode="nearest", align_corners=False)
        candidates["kornia scale + rotate"] = with_kornia
    except ImportError:
        print("kornia is not installed (pip install kornia): skipped")
    from torchvision.transforms.v2 import functional as v2

    def with_v2():  # v2 applies one set of parameters per call: per-sample parameters need a loop
        out = []
        for image, angle, z in zip(images, angles.tolist(), zoom.tolist(), strict=True):
            if z:
                image = v2.resize(v2.center_crop(image, [22, 22]), [28, 28])
            out.append(v2.rotate(image, angle))
        return torch.stack(out)
    candidates["torchvision.transforms.v2 per image"] = with_v2
    augmentation_picture(args, device)
    for name, fn in candidates.items():
        times = []
        for _ in range(args.repeats + 1):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - start)
        print(f"{name}: median {1000 * statistics.median(times[1:]):.2f} ms per batch of {args.batch_size}")


def augmentation_picture(args, device, path="img/augmentation_s5_vs_fast.png"):
    """The same training images through both pipelines' augmentation, three draws each, side by side."""
    import matplotlib.pyplot as plt

    train_set, _ = utils.get_mnist_datasets(args.data_dir, download=False)
    n, draws = 8, 3
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    raw = train_set.data[:n, None].float() / 255
    fig, axes = plt.subplots(2 * draws, n, figsize=(1.3 * n, 1.45 * 2 * draws))
    for d in range(draws):
        s5 = [utils.train_transforms(train_set[i][0]) for i in range(n)]
        fast = normalize(augment(raw, *sample_augmentation(n, generator)))
        for i in range(n):
            for row, image in ((2 * d, s5[i]), (2 * d + 1, fast[i])):
                axes[row, i].imshow(image[0] * utils.MNIST_STD + utils.MNIST_MEAN, cmap="gray", vmin=0, vmax=1)
                axes[row, i].set_xticks([])
                axes[row, i].set_yticks([])
        axes[2 * d, 0].set_ylabel("S5 (PIL)", fontsize=8)
        axes[2 * d + 1, 0].set_ylabel("fast (batched)", fontsize=8)
    fig.suptitle("Random draws of the S5 augmentation: original pipeline vs fast path")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"saved {path}")


def positive(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("throughput", "full", "augment", "profile"), default="throughput")
    p.add_argument("--data-dir")
    p.add_argument("--device", type=utils.device_arg, help="cpu, cuda, cuda:N, mps (default: the best available)")
    p.add_argument("--batch-size", type=positive, default=512)
    p.add_argument("--batches", type=positive, default=30, help="throughput, profile: batches per timed run")
    p.add_argument("--repeats", type=positive, default=5, help="timed runs per setup; the median is reported")
    p.add_argument("--pipeline", choices=utils.PIPELINES, default="fast", help="full: which pipeline")
    p.add_argument("--recipe", choices=sorted(utils.RECIPES), default="s5", help="full: which recipe")
    p.add_argument("--epochs", type=positive, help="full: override the recipe's epochs")
    p.add_argument("--seeds", type=positive, default=5, help="full: how many seeds (runs) (default: 5)")
    p.add_argument("--first-seed", type=int, default=1, help="full: seeds run from this one on (default: 1)")
    p.add_argument("--out", help="full: JSON file for the results "
                   "(default: benchmarks/results/RECIPE_PIPELINE_DEVICE[_PRECISION][_COMPILE]_seedsA-B.json)")
    p.add_argument("--overwrite", action="store_true", help="full: replace --out if it exists")
    p.add_argument("--precision", choices=utils.PRECISIONS,
                   help="the fast path's precision (throughput) or the recipe's (full); default: the recipe's")
    p.add_argument("--compile", choices=utils.COMPILE_MODES,
                   help="throughput: also time the fast path compiled so; full, profile: compile the step so "
                   "(default: auto, graphed on CUDA; the original pipeline's step: off)")
    p.add_argument("--matmul-size", type=positive, default=4096, help="throughput: n of the n x n matmul timed")
    args = p.parse_args(argv)
    device = args.device or get_device()
    print(hardware(device, args.precision))
    try:
        modes = {"throughput": throughput, "full": full_run, "augment": augment_speed, "profile": profile_step}
        modes[args.mode](args, device)
    except (ValueError, OSError) as error:  # missing data, an output that exists or cannot be written
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
