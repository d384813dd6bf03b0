"""Every GPU check of autokd in one run, in priority order, within --budget-s (default 8 minutes).

    python bench/gpu_check.py --data-dir DIR --record   # DIR: CIFAR-10 as an image folder, e.g. cifar10-jpeg
    python bench/gpu_check.py --cpu-smoke              # the same flow at tiny sizes on the CPU (tests/test_bench.py)

On a lent machine only the working tree travels: put the tarball alone in the git-ignored data/cifar10-jpeg/
(cp ../shared/data/cifar10-jpeg.tar.gz data/cifar10-jpeg/), carry data/cifar10-jpeg, run there
    tar xzf data/cifar10-jpeg/cifar10-jpeg.tar.gz -C data/cifar10-jpeg && python bench/gpu_check.py \\
        --data-dir data/cifar10-jpeg --out "$OUT" --cache-dir /tmp/autokd-cache
and here, on the folder that came back: python bench/gpu_check.py --record-from FOLDER.
Sections, each given a share of the budget and skipped (with the reason) when too little time is
left; every figure is appended to <out>/gpu_check.jsonl and gpu_check.md at once:
 1. profile       one middle-θ training step: operator calls, kernels, top kernels by GPU time, FLOPs
                  and bytes per image; correctness: per-step losses in fp32 without TF32 under
                  deterministic kernels, captured vs eager, beside eager vs eager
 2. levers        img/s per GPU of each lever, one run, the same conditions, with the binding limit
 3. search        a teacher trained here, then search.py end to end on one GPU (lessons, BOHB, study)
 4. kd            bench/kd_cifar.py: KD against no KD on the same students, with that teacher
 5. course        the one-GPU course run's time, projected from the rates measured above
"""
import argparse
import dataclasses
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import bohb  # noqa: E402
import course  # noqa: E402
import data as D  # noqa: E402
import generator as G  # noqa: E402
import kd_cifar  # noqa: E402
import train as T  # noqa: E402
from machinery import capture, files, pool as machinery_pool  # noqa: E402
from machinery.executor import with_worker  # noqa: E402
from results import machine, record  # noqa: E402

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS for section 1, set before CUDA starts

THETAS = {
    "all-min": {k: lo for k, (_, lo, _) in G.SPACE.items()},
    "middle": {"top_nodes": 6, "top_k": 4, "top_p": 0.5, "mid_nodes": 6, "mid_p": 0.6,
               "bottom_nodes": 6, "bottom_k": 4, "bottom_p": 0.5},
    "all-max": {k: hi for k, (_, _, hi) in G.SPACE.items()},
}
# Data-sheet peaks (not measured here): dense bf16 tensor FLOP/s and HBM bytes/s, SXM parts.
PEAKS = {"H200": (989e12, 4.8e12), "H100": (989e12, 3.35e12)}
GRAPH_LAUNCH_S = 2e-6  # about what a graph replay costs per kernel (the estimate, not measured here)


class Report:
    """Figures as (section, measurement, value, note) rows, appended to gpu_check.jsonl and rewritten into
    gpu_check.md as they come; a deadline for the run and one for the section running."""

    def __init__(self, budget_s, out, only=None):
        self.start, self.budget, self.out, self.only = time.perf_counter(), budget_s, out, only
        self.rows, self.skipped, self.keep, self.section_end = [], {}, {}, None
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / "gpu_check.jsonl", "a")

    def total_left(self):
        return self.budget - (time.perf_counter() - self.start)

    def left(self):
        """Seconds left to the running section (its share, or the run's end if sooner)."""
        end = self.section_end if self.section_end is not None else float("inf")
        return min(self.total_left(), end - time.perf_counter())

    def add(self, section, what, value, note=""):
        self.rows.append((section, what, value, note))
        self.keep[section, what] = value
        print(f"  {section:8s} {what:64s} {fmt(value)}  {note}", flush=True)
        self.log.write(json.dumps({"section": section, "what": what, "value": value, "note": note}, default=str) + "\n")
        self.log.flush()
        self.save()

    def section(self, name, needs_s, share_s, fn, *args):
        """Run fn(self, *args) with `share_s` seconds if `needs_s` are left; an exception fails that section only."""
        if self.only is not None and name not in self.only:
            return
        if self.total_left() < needs_s:
            self.skip(name, f"{self.total_left():.0f} s left, it needs about {needs_s} s")
            return
        print(f"[{name}] ({self.total_left():.0f} s left, a share of {share_s} s)", flush=True)
        t = time.perf_counter()
        self.section_end = t + share_s
        try:
            fn(self, *args)
        except Exception:  # noqa: BLE001 (report it, run the next section)
            print(traceback.format_exc(), flush=True)
            self.skip(name, "failed: " + traceback.format_exc().strip().splitlines()[-1])
        self.section_end = None
        self.add("seconds", name, round(time.perf_counter() - t, 1), "wall time of the section")

    def skip(self, name, why):
        self.skipped[name] = why
        print(f"[{name}] {why}", flush=True)
        self.add("skipped", name, why)

    def markdown(self):
        lines = ["| section | measurement | value | note |", "|---|---|---|---|"]
        return "\n".join(lines + [f"| {s} | {w} | {fmt(v)} | {n} |" for s, w, v, n in self.rows])

    def save(self):
        (self.out / "gpu_check.md").write_text(f"{self.machine}\n\n{self.markdown()}\n")


def fmt(value):
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def subset(data, n_train):
    """The first n_train training images, as a Data of the same kind."""
    return dataclasses.replace(data, train=D.TensorSplit(data.train.x[:n_train], data.train.y[:n_train]))


def new_run(data, device, arch, cfg, **protocol):
    """train.setup's run of a fresh student of `arch` (seed 0) on `data`, no scoring."""
    protocol = T.Protocol(**{"batch_size": cfg.batch, "bn_batches": 0, "amp": cfg.amp, **protocol})
    return T.setup(T.build_student(arch, 0), data, protocol, None, T.TAU, 0.0,
                   T.RunOptions(device=str(device), workers=0))


# ----------------------------------------------------------------------------------------------------
# 1. The profile of one step, and captured against eager

class Counter(TorchDispatchMode):
    """Operator calls and the bytes they read and write (every tensor argument and result once per call:
    the traffic of an unfused step, an estimate of what a fused one moves at most)."""

    def __init__(self):
        super().__init__()
        self.calls, self.bytes = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.calls += 1
        self.bytes += sum(t.numel() * t.element_size() for t in tree_flatten((args, kwargs, out))[0]
                          if isinstance(t, torch.Tensor))
        return out


def count_step(run, data, device):
    """(operator calls, FLOPs, bytes) of one eager training step of `run` on a training batch."""
    from torch.utils.flop_counter import FlopCounterMode
    x, y, _ = next(D.batches(data, data.train, run.protocol.batch_size, train=True, gen=data.generator(1),
                             memory_format=run.memory_format))
    flops, counter = FlopCounterMode(display=False), Counter()
    run.model.train()
    with flops, counter:
        T.kd_step(run, x, y, None)
    sync(device)
    return counter.calls, flops.get_total_flops(), counter.bytes


def profile(report, data, device, cfg):
    """One middle-θ step (eager, the default precision): calls, kernels, top kernels, time per kernel."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    arch = G.sample(cfg.theta, 0, data.image_size, data.num_classes, cfg.max_params)
    part = subset(data, cfg.batch * cfg.profile_steps)
    run = new_run(part, device, arch, cfg, capture="off")
    T.train_epoch(run, part.generator(0))  # warm-up: cuDNN's choice, the allocator
    calls, flops, traffic = count_step(run, part, device)
    report.add("profile", f"{cfg.theta_name} θ: width {arch['width']}, {arch['params'] / 1e6:.2f} M params, batch "
               f"{cfg.batch}, {run.cfg['amp']}", calls, "operator calls per training step (dispatch count)")
    report.add("profile", "FLOPs per training image (forward + backward)", f"{flops / cfg.batch / 1e9:.4g}", "GFLOP")
    report.add("profile", "bytes read + written per training image, unfused", round(traffic / cfg.batch / 1e6, 1), "MB")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        steps = T.train_epoch(run, part.generator(1))[2] / cfg.batch
    on_gpu = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels = len(on_gpu) / steps if on_gpu else None
    report.add("profile", "kernels per training step (torch.profiler)", "not counted" if kernels is None else
               round(kernels), "" if kernels else "no CUDA device")
    key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    entries = [e for e in prof.key_averages() if not on_gpu or e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(getattr(e, key) for e in entries) or 1
    for e in sorted(entries, key=lambda e: getattr(e, key), reverse=True)[:cfg.top_kernels]:
        report.add("profile", f"top {'kernel' if on_gpu else 'CPU op'}: {e.key[:58]}",
                   f"{100 * getattr(e, key) / total:.1f} %", f"{e.count / steps:.0f} per step")
    t = time.perf_counter()
    T.train_epoch(run, part.generator(2))  # unprofiled; it ends in a host wait
    step_s = (time.perf_counter() - t) / steps
    report.add("profile", "eager step time, profiler off", round(1e3 * step_s, 2),
               f"ms; {1e6 * step_s / (kernels or calls):.1f} µs per {'kernel' if kernels else 'operator call'}")


def correctness(report, data, device, cfg):
    """Per-step losses of the middle θ in fp32 without TF32 under deterministic kernels: eager twice
    (the spread of eager itself) and captured, over cfg.check_epochs epochs of cfg.check_steps steps."""
    arch = G.sample(cfg.theta, 0, data.image_size, data.num_classes, cfg.max_params)
    part = subset(data, cfg.batch * cfg.check_steps)
    losses, captured = {}, None
    for name, mode in (("eager", "off"), ("eager again", "off"), ("captured", "on")):
        torch.manual_seed(0)  # dropout, on every device
        run = new_run(part, device, arch, cfg, amp="off", capture=mode, deterministic="on")
        tf32 = device.type == "cuda" and (torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)
        assert not tf32, "deterministic mode left TF32 on: the fp32 rows would not be fp32"
        step, losses[name] = run.step, []
        run.step = lambda x, y, lesson, step=step, out=losses[name]: keep_loss(step(x, y, lesson), out)
        gen = part.generator(0)
        for epoch in range(cfg.check_epochs):
            T.train_epoch(run, gen)
            capture.set_lr(run.optimizer, T.cosine(run.peak, epoch + 1, cfg.check_epochs))
        losses[name] = [float(v) for v in losses[name]]
        if mode == "on":
            captured = step.graph is not None
    report.keep["losses"] = losses
    eager = losses["eager"]
    for other in ("eager again", "captured"):
        gaps = [abs(a - b) for a, b in zip(eager, losses[other])]
        report.add("correct", f"{other} vs eager: step 1 |Δloss|", f"{gaps[0]:.2e}",
                   ("within 1e-6" if gaps[0] <= 1e-6 else "NOT within 1e-6") +
                   (f"; ran captured: {captured}" if other == "captured" else ""))
        report.add("correct", f"{other} vs eager: largest relative gap over {len(gaps)} steps",
                   f"{max(g / abs(a) for g, a in zip(gaps, eager)):.2e}", "fp32, TF32 off, deterministic kernels")
    report.add("correct", "per-step losses (eager, eager again, captured)", json.dumps(
        {k: [round(v, 7) for v in vs] for k, vs in losses.items()}), "")


def keep_loss(result, out):
    out.append(result[0].detach().clone())  # a replayed graph's output is overwritten by the next replay
    return result


# ----------------------------------------------------------------------------------------------------
# 2. The levers, side by side

def steady_rate(data, device, arch, cfg, tweak=None, **protocol):
    """{rate: img/s of cfg.lever_epochs epochs after a warm-up epoch, calls: operator calls per step, flops and
    bytes per image, captured: whether it ran captured} of a fresh student of `arch` with `tweak(run)` applied."""
    part = subset(data, cfg.lever_images)
    run = new_run(part, device, arch, cfg, **protocol)
    if tweak is not None:
        tweak(run)
    gen = part.generator(0)
    T.train_epoch(run, gen)  # warm-up: cuDNN's timing, the recording
    t, seen = time.perf_counter(), 0
    for _ in range(cfg.lever_epochs):
        seen += T.train_epoch(run, gen)[2]  # ends in a host wait
    rate = seen / (time.perf_counter() - t)
    calls, flops, traffic = count_step(run, part, device)
    batch = run.protocol.batch_size
    result = {"rate": rate, "calls": calls, "flops": flops / batch, "bytes": traffic / batch, "batch": batch,
              "captured": getattr(run.step, "graph", None) is not None}
    del run
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def limits(machine_line, r):
    """What a lever's rate `r` (steady_rate's result) achieves: TFLOP/s, GB/s of unfused traffic and the time
    per operator call; on a device with data-sheet peaks, their shares, with launches' share for a captured
    step (calls x a replay's cost per kernel over the step time), and the largest share, which binds."""
    steps_s = r["rate"] / r["batch"]
    text = (f"{r['flops'] * r['rate'] / 1e12:.2f} TFLOP/s, {r['bytes'] * r['rate'] / 1e9:.0f} GB/s unfused, "
            f"{1e6 / steps_s / r['calls']:.1f} µs per call")
    peak = next((v for k, v in PEAKS.items() if k in machine_line), None)
    if peak is None:
        return text + " (no data-sheet peak for this device)"
    shares = {"arithmetic": r["flops"] * r["rate"] / peak[0], "bandwidth": r["bytes"] * r["rate"] / peak[1]}
    if r["captured"]:
        shares["launches (2 µs per call, assumed)"] = r["calls"] * GRAPH_LAUNCH_S * steps_s
    return text + "; of peak: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in shares.items()) + \
        f"; binds: {max(shares, key=shares.get)}"


def levers(report, data, device, cfg):
    """Each lever's img/s per GPU for the middle θ (batch cfg.batch, captured unless said), one after another
    in one process; then the students per GPU, the conv sweep and the compiled units."""
    exact = G.sample(cfg.theta, 0, data.image_size, data.num_classes, cfg.max_params)
    aligned = G.sample(cfg.theta, 0, data.image_size, data.num_classes, cfg.max_params, width_multiple=8)
    short = cfg.lever_images % cfg.batch
    rows = [("eager", exact, {}, dict(capture="off")),
            ("captured", exact, {}, dict(capture="on")),
            (f"captured, width {aligned['width']} (multiple of 8, {aligned['params'] / 1e6:.2f} M params) "
             f"instead of {exact['width']}", aligned, {}, dict(capture="on")),
            (f"eager, width {aligned['width']}", aligned, {}, dict(capture="off"))]
    rows += [(f"captured, batch {b} (lr x {b / cfg.batch:g})", exact, {}, dict(capture="on", batch_size=b))
             for b in cfg.batches[1:]]
    rows += [("captured, no num_batches_tracked updates", exact, {"tweak": no_batch_counter}, dict(capture="on")),
             ("captured, one bf16 cast of all conv weights", exact, {"tweak": one_weight_cast}, dict(capture="on")),
             (f"captured, a second graph for the short last batch of {short}", exact, {"tweak": short_batch_graph},
              dict(capture="on")),
             ("captured, TF32 without autocast", exact, {}, dict(capture="on", amp="off"))]
    batch_rates = {}
    for label, arch, options, protocol in rows:
        if report.left() < cfg.lever_needs_s:
            report.add("levers", label, "not measured", "out of the section's time")
            continue
        r = steady_rate(data, device, arch, cfg, **options, **protocol)
        report.add("levers", label, round(r["rate"], 1), f"img/s; {r['calls']} calls/step; ran captured: "
                   f"{r['captured']}; " + limits(report.machine, r))
        if arch is exact and protocol.get("capture") == "on" and not options.get("tweak") and "amp" not in protocol:
            batch_rates[r["batch"]] = r["rate"]
    best = max(batch_rates, key=batch_rates.get, default=cfg.batch)
    for mode in ("threads", "processes"):
        several(report, device, cfg, mode, sorted({cfg.batch, best}))
    conv_sweep(report, data, device, cfg)
    if report.left() > cfg.lever_needs_s:  # last: compiling may take the rest of the section
        regional_compile(report, device, cfg)


def no_batch_counter(run):
    """BatchNorm without its num_batches_tracked buffer: one add kernel less per BatchNorm and step. (It
    feeds only momentum=None, which train.recalibrate_bn uses: a bench lever, not a code option.)"""
    for m in run.model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.num_batches_tracked = None


def one_weight_cast(run):
    """Every conv weight a channels_last view of one flat fp32 parameter cast to bf16 once per step (one
    kernel forward, one back) instead of one autocast cast per conv. A bench lever, not a code option."""
    convs = [m for m in run.model.modules() if isinstance(m, nn.Conv2d)]
    shapes = [c.weight.shape for c in convs]                               # (O, I, kh, kw) each
    flat = nn.Parameter(torch.cat([c.weight.detach().permute(0, 2, 3, 1).reshape(-1) for c in convs]))
    for c in convs:
        del c.weight
    run.model.register_parameter("conv_weights", flat)
    dtype = torch.bfloat16 if run.cfg["amp"] == "bf16" else flat.dtype

    def cast(module, args):
        for c, piece, (o, i, kh, kw) in zip(convs, flat.to(dtype).split([s.numel() for s in shapes]), shapes):
            c.weight = piece.view(o, kh, kw, i).permute(0, 3, 1, 2)   # (O, I, kh, kw), channels_last strides
    run.model.register_forward_pre_hook(cast)
    renew_step(run)


def renew_step(run):
    """The optimiser and the step of `run` made again over its parameters as they are now."""
    p = run.protocol
    run.params = [q for q in run.model.parameters() if q.requires_grad]
    run.optimizer = capture.SGD(run.params, capture.learning_rate(run.peak, run.device, run.cfg["capture"]),
                                p.momentum, p.weight_decay)
    run.step = capture.CapturedStep(functools.partial(T.kd_step, run), run.model, run.optimizer, p.batch_size,
                                    run.cfg["capture"])


class TwoGraphs:
    """The full batches' CapturedStep, and a second one recorded for the short last batch of an epoch
    (which the first runs eagerly)."""

    def __init__(self, run):
        self.full = run.step
        self.short = capture.CapturedStep(self.full.step, run.model, run.optimizer,
                                          len(run.data.train) % run.protocol.batch_size, self.full.can_capture)

    @property
    def graph(self):
        return self.full.graph if self.short.graph is not None else None

    def __call__(self, x, y, lesson=None):
        return (self.full if len(y) == self.full.batch_size else self.short)(x, y, lesson)


def short_batch_graph(run):
    run.step = TwoGraphs(run)


COMPILE_CHILD = """
import json, sys
sys.path.insert(0, {bench!r})
import gpu_check
print("RESULT " + json.dumps(gpu_check.compiled_rate(json.loads({args!r}))), flush=True)
"""


def compiled_rate(args):
    """In a child process: the middle θ with every ReLU-Conv-BN unit compiled on its own (regional
    compilation: one compiled graph per unit shape), eager and captured."""
    cfg = SimpleNamespace(**args["cfg"])
    device = torch.device(args["device"])
    data = D.load_data(args["dataset"], args["data_dir"], "search", device=device, val_size=args["val_size"],
                       cache_dir=args["cache_dir"])
    arch = G.sample(cfg.theta, 0, data.image_size, data.num_classes, cfg.max_params)
    torch._dynamo.config.cache_size_limit = 256  # one entry per unit shape and dtype

    def compile_units(run):
        for m in run.model.modules():
            if isinstance(m, nn.Sequential) and [type(c) for c in m] == [nn.ReLU, nn.Conv2d, nn.BatchNorm2d]:
                m.compile(backend=cfg.compile_backend, dynamic=False)
    out = {}
    for mode in ("off", "on"):
        t = time.perf_counter()
        out[mode] = {**steady_rate(data, device, arch, cfg, tweak=compile_units, capture=mode),
                     "seconds": time.perf_counter() - t}
    return out


def regional_compile(report, device, cfg):
    """torch.compile per unit (regional compilation), in a child process with a time limit."""
    args = {"cfg": vars(cfg), "device": str(device), **report.data_args}
    limit = max(10, int(report.left() - 5))
    code = COMPILE_CHILD.format(bench=str(ROOT / "bench"), args=json.dumps(args))
    label = f"compiled units ({cfg.compile_backend})"
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        report.add("levers", label, "not finished", f"still compiling after {limit} s")
        return
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if not line:
        report.add("levers", label, "failed", (r.stderr.strip().splitlines() or ["?"])[-1][:200])
        return
    for mode, res in json.loads(line[0][7:]).items():
        name = "captured" if mode == "on" else "eager"
        report.add("levers", f"{name}, {label}", round(res["rate"], 1),
                   f"img/s; ran captured: {res['captured']}; {res['seconds']:.0f} s with compilation; "
                   + limits(report.machine, res))


def conv_sweep(report, data, device, cfg):
    """One ReLU-Conv3x3-BN unit, forward and backward, at every stage width of the three θ (exact and
    rounded to a multiple of 8) and its resolution: time and TFLOP/s."""
    amp, autocast, layout = capture.precision(T.Protocol(amp=cfg.amp), device)
    widths = set()
    for theta in (THETAS[name] for name in cfg.sweep_thetas):
        for multiple in (1, 8):
            try:
                arch = G.sample(theta, 0, data.image_size, data.num_classes, cfg.max_params, width_multiple=multiple)
            except ValueError:  # no width of this multiple fits the limit (the smoke's tiny one)
                continue
            widths |= {(arch["width"] * r, data.image_size // r) for r in (1, 2, 4)}
    for c, size in sorted(widths):
        if report.left() < 2:
            report.add("levers", "conv sweep", "stopped", "out of the section's time")
            return
        unit = G.unit(c, c).to(device, memory_format=layout)
        x = torch.randn(cfg.batch, c, size, size, device=device).contiguous(memory_format=layout).requires_grad_()
        for i in range(cfg.sweep_iters + 3):  # 3 warm-up
            if i == 3:
                sync(device)
                t = time.perf_counter()
            with autocast:
                out = unit(x)
            out.float().sum().backward()
        sync(device)
        seconds = (time.perf_counter() - t) / cfg.sweep_iters
        flops = 3 * 2 * cfg.batch * c * c * 9 * size * size  # forward, and backward's two products
        report.add("levers", f"conv sweep: {c} channels at {size} px, {amp}", round(seconds * 1e6, 1),
                   f"µs per unit (fwd + bwd, batch {cfg.batch}); {flops / seconds / 1e12:.2f} TFLOP/s")


def several(report, device, cfg, mode, batches):
    """Aggregate img/s of n middle-θ students on one GPU at each batch size: threads of one worker process
    on their own streams (--workers-per-gpu), or processes of one student each."""
    if report.left() < cfg.several_needs_s:
        report.add("levers", f"students per GPU, {mode}", "not measured", "out of the section's time")
        return
    settings = SimpleNamespace(**report.worker_settings, workers_per_gpu=max(cfg.students))
    slots = [(str(device), max(cfg.students))] if mode == "threads" else [(str(device), 1)] * max(cfg.students)
    pool = machinery_pool.Pool(slots, T.Worker.load, (settings,))
    try:
        for batch in batches:
            for n in cfg.students:
                label = f"{n} students, {mode}, batch {batch}"
                if report.left() < cfg.several_needs_s:
                    report.add("levers", label, "not measured", "out of the section's time")
                    continue
                futures = [pool.submit(with_worker(steady_student), cfg, batch, seed) for seed in range(n)]
                runs = [f.result(timeout=max(10, report.left())) for f in futures]
                start, end = max(r["steady_start"] for r in runs), min(r["end"] for r in runs)
                images = sum(r["rate"] * (end - start) for r in runs)
                report.add("levers", label, round(images / max(end - start, 1e-9), 1),
                           f"img/s in all ({cfg.theta_name} θ; captured: {all(r['captured'] for r in runs)})")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def steady_student(worker, cfg, batch, seed):
    """In a worker: the middle θ trained on cfg.lever_images; its rate after the first epoch, and when."""
    part = subset(worker.data, cfg.lever_images)
    ends = []
    arch = G.sample(cfg.theta, seed, part.image_size, part.num_classes, cfg.max_params)
    protocol = T.Protocol(epochs=cfg.lever_epochs + 1, batch_size=batch, bn_batches=0, amp=cfg.amp,
                          eval_every=cfg.lever_epochs + 1, capture="on")
    result = T.fit(T.build_student(arch, seed), part, protocol, options=T.RunOptions(
        device=worker.device, seed=seed, own_rng=False, workers=0, log=lambda _: ends.append(time.time())))
    rates = [row["images_per_s"] for row in result["history"][1:]]
    return {"rate": statistics.median(rates), "steady_start": ends[0], "end": ends[-1],
            "captured": result["config"]["capture"]}


# ----------------------------------------------------------------------------------------------------
# 3. Teacher and search end to end; 4. the KD preset; 5. the course's projected time

def mini_search(report, device, cfg, out, work):
    """A DARTS teacher trained by train.py, then search.py on one GPU with it: lessons, BOHB, the study."""
    teacher = work / "teacher.pt"
    t = time.perf_counter()
    epochs, rate, accuracy = kd_cifar.train_teacher(teacher, report.data_args, *cfg.teacher, cfg.teacher_batch,
                                                    device, min(cfg.teacher_s, report.left() - 10))
    report.teacher = teacher
    report.keep["teacher rate"] = rate
    report.add("search", f"teacher: DARTS C={cfg.teacher[0]}, {cfg.teacher[1]} cells, {epochs}/{cfg.teacher[2]} epochs",
               round(time.perf_counter() - t, 1), f"s wall; {rate:,.0f} img/s training (median epoch); hold-out "
               f"accuracy {100 * accuracy:.2f} %")
    folder = work / "mini_search"
    command = [sys.executable, str(ROOT / "search.py"), "--dataset", report.data_args["dataset"], "--teacher",
               str(teacher), "--out", str(folder), "--seed", "0", *cfg.search_args,
               *kd_cifar.data_flags(report.data_args)]
    t = time.perf_counter()
    with open(out / "mini_search.log", "w") as log:  # kept when the search runs out of time too
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            code = process.wait(timeout=max(10, report.left()))
        except subprocess.TimeoutExpired:
            process.kill()
            code = "killed: out of time"
    wall = time.perf_counter() - t
    records = [r for name in ("results.jsonl", "study.jsonl") for r in files.read_jsonl(folder / name)[0]]
    ok = [r for r in records if r["loss"] is not None]
    images = sum(r["info"].get("images", 0) for r in ok)
    report.keep["search rate"] = images / wall
    report.add("search", f"search.py: {len(ok)}/{len(records)} evaluations succeeded (exit {code})", round(wall, 1),
               f"s wall, start-up, lessons, scoring and BatchNorm re-estimation included; best.json "
               f"{'written' if (folder / 'best.json').is_file() else 'missing'}")
    report.add("search", "student images over the whole search's wall time", round(images / wall, 1),
               f"img/s ({images:,} images; captured: {sum(bool(r['info'].get('capture')) for r in ok)}, "
               f"lessons looked up: {sum(r['info'].get('lessons') == 'cached' for r in ok)})")


def kd_preset(report, device, cfg, out):
    """bench/kd_cifar.py with this run's teacher (or its own), in the time left."""
    command = [sys.executable, str(ROOT / "bench" / "kd_cifar.py"), "--out", str(out / "kd_cifar"),
               "--budget-s", str(int(report.left() - 20)), *cfg.kd_args, *kd_cifar.data_flags(report.data_args)]
    if getattr(report, "teacher", None) and Path(report.teacher).is_file():
        command += ["--teacher", str(report.teacher)]
    with open(out / "kd_cifar.log", "w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, timeout=max(10, report.left()))
    result = json.loads((out / "kd_cifar" / "kd_cifar.json").read_text())
    report.add("kd", f"bench/kd_cifar.py: {result['finished']}/{result['planned']} runs (exit {code})",
               round(result["wall_s"], 1), "s wall")
    for r in result["result"]["paired"]:
        report.add("kd", f"{r['budget']:g} epochs: mean KD − no KD over {r['pairs']} pairs",
                   "n/a" if r["mean_diff"] is None else f"{100 * r['mean_diff']:+.2f} pp",
                   f"KD wins {r['kd_wins']} / losses {r['kd_losses']}, sign test p = {r['sign_test_p']}")
    for r in result["result"]["spearman"]:
        report.add("kd", f"Spearman ρ, {r['budgets'][0]:g} vs {r['budgets'][1]:g} epochs, {r['arm']}", r["rho"],
                   f"{r['students']} students")


def course_projection(report, cfg):
    """The one-GPU CIFAR-10 course run (bench/course.py) at the rates measured above: its teacher's
    images at the teacher's training rate, its searches' and retrainings' student images at the
    mini search's whole-run rate. A projection, not a measured course run."""
    teacher_rate, search_rate = report.keep.get("teacher rate"), report.keep.get("search rate")
    if not teacher_rate or not search_rate:
        report.add("course", "projection", "not made", "needs the teacher's and the mini search's measured rates")
        return
    flags = lambda argv: {k.lstrip("-").replace("-", "_"): v for k, v in zip(argv[::2], argv[1::2])}  # noqa: E731
    teacher, search, retrain = flags(course.COURSE_TEACHER), flags(course.COURSE_SEARCH), flags(course.COURSE_RETRAIN)
    plan = bohb.bracket_plan(float(search["min_budget"]), float(search["max_budget"]), 2)
    budgets = sorted({b for bracket in plan for _, b in bracket})
    search_epochs = int(int(search["iterations"]) * bohb.plan_budget(plan) + int(search["study"]) * sum(budgets))
    images = {"teacher": int(teacher["epochs"]) * 50_000, "two searches": 2 * search_epochs * 45_000,
              "two retrainings": 2 * int(retrain["k"]) * int(retrain["runs"]) * int(retrain["epochs"]) * 50_000}
    seconds = {"teacher": images["teacher"] / teacher_rate,
               **{k: images[k] / search_rate for k in ("two searches", "two retrainings")}}
    for k in images:
        report.add("course", f"{k}: {images[k]:,} images", round(seconds[k] / 60, 1), "minutes, projected")
    report.add("course", "the course run in all", round(sum(seconds.values()) / 60, 1),
               "minutes, projected from measured rates (retraining at the search's rate; not a measured run)")


# ----------------------------------------------------------------------------------------------------

class Sizes:
    """Sizes of the checks: for one H100/H200, or tiny for --cpu-smoke (digits on the CPU)."""

    def __init__(self, smoke):
        self.theta_name = "middle" if not smoke else "a small"
        self.theta = THETAS["middle"] if not smoke else THETAS["all-min"]
        self.max_params = None if not smoke else 200_000
        self.amp = "auto" if not smoke else "bf16"
        self.batch = 96 if not smoke else 16
        self.batches = (96, 192, 384, 768) if not smoke else (16, 32)
        # the CIFAR subset: 5,000 training images, 1,000 held out; the smoke's digits: 297 and 800
        self.per_class, self.val_size = 600, 1000 if not smoke else 800
        self.profile_steps, self.top_kernels = (10, 10) if not smoke else (2, 3)
        self.check_steps, self.check_epochs = (10, 2) if not smoke else (3, 2)
        # an epoch of 3 batches of 768 (24 of 96) and a short last batch of 72, as 45,000 mod 96 leaves
        self.lever_images = 24 * 96 + 72 if not smoke else 16 + 8
        self.lever_epochs, self.lever_needs_s = (2, 12) if not smoke else (1, 1)
        self.compile_backend = "inductor" if not smoke else "eager"
        self.sweep_iters, self.sweep_thetas = (20, tuple(THETAS)) if not smoke else (1, ("all-min",))
        self.students, self.several_needs_s = ((1, 4, 8), 20) if not smoke else ((2,), 1)
        self.teacher = (16, 8, 10) if not smoke else (4, 3, 1)    # the course's DARTS teacher: width, cells, epochs
        self.teacher_batch = 96 if not smoke else 64
        self.teacher_s = 60 if not smoke else 120
        self.search_args = ["--min-budget", "1", "--max-budget", "2", "--iterations", "1", "--study", "3",
                            "--max-nodes", "5", "--max-params", "1000000", "--gpus", "1", "--workers-per-gpu", "4"]
        self.kd_args = []
        if smoke:
            self.search_args = ["--min-budget", "1", "--max-budget", "1", "--iterations", "1", "--study", "0",
                                "--max-nodes", "4", "--max-params", "30000", "--batch-size", "32", "--gpus", "0",
                                "--workers", "1"]
            self.kd_args = ["--smoke", "--students", "1", "--budgets", "1", "--alphas", "1", "--batch-size", "32"]
        # (needs, share) in seconds: what a section needs at least to start, and the most it may take of
        # the 8-minute default. Guesses until a GPU run times the sections (the "seconds" rows); the CPU
        # smoke's timings say only which sections are heavy (search and kd start processes).
        self.sections = {"profile": (15, 25), "correct": (15, 35), "levers": (60, 150), "search": (60, 100),
                         "kd": (90, 300), "course": (0, 5)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="CIFAR-10 as an image folder train/<class>/*.jpg (cifar10-jpeg.tar.gz "
                                                    "unpacked); a subset of it is used")
    p.add_argument("--cache-dir", default=None, help="decoded image cache (default: a temporary folder)")
    p.add_argument("--out", default=None, help="folder for gpu_check.jsonl, gpu_check.md and logs (default: a new "
                                               "temporary folder)")
    p.add_argument("--budget-s", type=float, default=480, help="stop starting sections after this many seconds")
    p.add_argument("--cpu-smoke", action="store_true", help="the same flow at tiny sizes on the CPU (digits)")
    p.add_argument("--record", action="store_true", help="write the table into bench/RESULTS.md (not with --cpu-smoke)")
    p.add_argument("--record-from", default=None, metavar="FOLDER",
                   help="only write bench/RESULTS.md from a finished run's --out folder (a lent GPU's, fetched here)")
    p.add_argument("--only", default=None, help="comma-separated sections to run (default: all), e.g. profile,levers")
    args = p.parse_args(argv)
    if args.record_from:
        return record_from(Path(args.record_from))
    smoke, cfg = args.cpu_smoke, Sizes(args.cpu_smoke)
    if smoke and args.record:
        raise SystemExit("error: --cpu-smoke writes nothing into the repository; drop --record")
    device = torch.device("cpu" if smoke else "cuda:0")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU here; run with --cpu-smoke for the CPU check")
    if not smoke and (args.data_dir is None or not (Path(args.data_dir) / "train").is_dir()):
        raise SystemExit("error: --data-dir must be a CIFAR-10 image folder (unpack cifar10-jpeg.tar.gz into it)")
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_check-"))
    work = Path(tempfile.mkdtemp(prefix="gpu_check-work-"))  # the subset, caches, teacher, search: not figures
    try:
        return run(args, cfg, device, out, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, cfg, device, out, work):
    smoke = args.cpu_smoke
    report = Report(args.budget_s, out, args.only.split(",") if args.only else None)
    report.machine = machine(device)
    print(f"{report.machine}\nfigures -> {out}", flush=True)
    cache = args.cache_dir or str(work / "cache")
    folder = None if smoke else str(kd_cifar.subset_folder(args.data_dir, work, cfg.per_class))
    report.data_args = {"dataset": "digits" if smoke else "cifar10", "data_dir": folder, "val_size": cfg.val_size,
                        "cache_dir": cache}
    report.worker_settings = dict(report.data_args, split="search", no_kd=True, teacher=None, lessons=None,
                                  lessons_key=None)
    t = time.perf_counter()
    data = D.load_data(report.data_args["dataset"], folder, "search", device=device,
                       val_size=report.data_args["val_size"], cache_dir=cache)
    report.add("setup", f"{data.name}: {len(data.train):,} training images on {device}", round(time.perf_counter() - t, 1),
               "s to load")
    for name, fn, extra in (("profile", profile, (data, device, cfg)), ("correct", correctness, (data, device, cfg)),
                            ("levers", levers, (data, device, cfg)), ("search", mini_search, (device, cfg, out, work)),
                            ("kd", kd_preset, (device, cfg, out)), ("course", course_projection, (cfg,))):
        needs, share = cfg.sections[name]
        report.section(name, needs, share, fn, *extra)
    print("\n" + report.markdown())
    if args.record:
        record_from(out)
    return 0


def record_from(folder):
    """bench/RESULTS.md's gpu_check section (and kd_cifar's, where the run got that far) from a run's folder."""
    if not (folder / "gpu_check.md").is_file():
        raise SystemExit(f"error: {folder} holds no gpu_check.md; give the --out folder of a gpu_check run")
    record("gpu_check", "GPU check (bench/gpu_check.py)", "python bench/gpu_check.py --data-dir DIR --record",
           (folder / "gpu_check.md").read_text())
    kd = folder / "kd_cifar" / "kd_cifar.md"
    if kd.is_file():
        record("kd_cifar", "KD against no KD on a CIFAR-10 subset (bench/kd_cifar.py)",
               "python bench/kd_cifar.py --data-dir DIR --record", kd.read_text())
    print(f"recorded {folder} in bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
