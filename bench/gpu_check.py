"""Every GPU measurement of autokd in one run: at most about 8 minutes on one H100/H200, no download.

    python bench/gpu_check.py --data-dir /tmp/cifar10-jpeg --out /tmp/gpu_check   # a CIFAR-10 image folder
    python bench/gpu_check.py --cpu-smoke        # tiny sizes on the CPU, so the script cannot rot (tests run it)

It prints one markdown table and writes the same figures to gpu_check.json and gpu_check.md in --out
(and with --record into bench/RESULTS.md). Sections run in this order, each skipped when the time left
(--budget-s) is too short, each reported as failed without stopping the others:

 1. students    images/s of train.fit for the all-minimum, a middle and the all-maximum θ at batch 96:
                eager vs the step captured as a CUDA graph, bf16 autocast, channels_last or not; the
                recording's cost; peak memory of one student
 2. capture     the captured step against eager (fp32 without TF32, dropout off), beside eager against
                eager (cuDNN's run-to-run spread): the same losses within that spread
 3. KD          a KD step over a cross-entropy step, with the live DARTS teacher and with its lessons
                looked up; the rate at which the lessons are computed
 4. data        the on-device augmentation's share of a step
 5. several     aggregate images/s of 1, 2, 4 and 8 students on one GPU: threads of one worker process
                on their own CUDA streams (what --workers-per-gpu does), and separate processes with
                and without NVIDIA MPS
 6. teacher     DARTS teacher training images/s, eager and captured
 7. compile     torch.compile (mode reduce-overhead): compile time and step time, in a subprocess
 8. search      an end-to-end mini search: search.py --gpus 1 --workers-per-gpu 4, KD with lessons,
                one Hyperband iteration at 1-2 epoch budgets on 2,000 training images
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from machinery import files  # noqa: E402
import data as D  # noqa: E402
import generator as G  # noqa: E402
import teachers  # noqa: E402
import train as T  # noqa: E402
from machinery import pool as machinery_pool  # noqa: E402
from machinery.executor import with_worker  # noqa: E402
from results import machine, record  # noqa: E402
from teachers import lessons  # noqa: E402

THETAS = {
    "all-min": {k: lo for k, (_, lo, _) in G.SPACE.items()},
    "middle": {"top_nodes": 6, "top_k": 4, "top_p": 0.5, "mid_nodes": 6, "mid_p": 0.6,
               "bottom_nodes": 6, "bottom_k": 4, "bottom_p": 0.5},
    "all-max": {k: hi for k, (_, _, hi) in G.SPACE.items()},
}


class Report:
    """Figures as rows of (section, measurement, value, note), with a deadline for the whole run."""

    def __init__(self, budget_s, out, only=None):
        self.start, self.budget, self.out, self.only = time.perf_counter(), budget_s, out, only
        self.rows, self.figures, self.errors, self.keep = [], {}, {}, {}

    def left(self):
        return self.budget - (time.perf_counter() - self.start)

    def add(self, section, what, value, note=""):
        self.rows.append((section, what, value, note))
        self.figures.setdefault(section, {})[what] = value
        print(f"  {section:9s} {what:58s} {value}  {note}", flush=True)
        self.save()

    def section(self, name, needs_s, fn, *args):
        """Run one section if `needs_s` seconds are left; an exception fails that section only."""
        if self.only is not None and name.split(":")[0] not in self.only:
            return
        if self.left() < needs_s:
            self.errors[name] = f"skipped: {self.left():.0f} s left, it needs about {needs_s} s"
            print(f"[{name}] {self.errors[name]}", flush=True)
            return
        print(f"[{name}] ({self.left():.0f} s left)", flush=True)
        t = time.perf_counter()
        try:
            fn(self, *args)
        except Exception:  # noqa: BLE001 (report it, run the next section)
            self.errors[name] = traceback.format_exc().strip().splitlines()[-1]
            print(traceback.format_exc(), flush=True)
        self.figures.setdefault("seconds", {})[name] = round(time.perf_counter() - t, 1)
        self.save()

    def markdown(self):
        lines = ["| section | measurement | value | note |", "|---|---|---|---|"]
        lines += [f"| {s} | {w} | {fmt(v)} | {n} |" for s, w, v, n in self.rows]
        lines += [f"| {name} | not measured | | {why} |" for name, why in self.errors.items()]
        return "\n".join(lines)

    def save(self):
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps(
            {"machine": self.machine, "figures": self.figures, "errors": self.errors}, indent=1, default=str))
        (self.out / "gpu_check.md").write_text(self.markdown() + "\n")


def fmt(value):
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def subset(data, n_train, n_val):
    """The first n_train / n_val images of each split, as a Data of the same kind."""
    import dataclasses
    take = lambda split, n: None if split is None else D.TensorSplit(split.x[:n], split.y[:n])  # noqa: E731
    return dataclasses.replace(data, train=take(data.train, n_train), val=take(data.val, n_val))


def student(theta, data, seed=0, max_params=None):
    arch = G.sample(theta, seed, data.image_size, data.num_classes, max_params)
    torch.manual_seed(seed)
    return G.build(arch), arch


def fit_rate(model, data, protocol, device, teacher=None, alpha=0.0):
    """(images/s of the fastest epoch after the first, extra seconds of the first epoch, result): the
    first epoch carries cuDNN's kernel choice and, captured, the warm-up and the recording."""
    result = T.fit(model, data, protocol, teacher, 4.0, alpha, T.RunOptions(device=device, log=lambda _: None))
    seen = [row["images_per_s"] for row in result["history"]]
    first_extra = len(data.train) / seen[0] - len(data.train) / max(seen[1:]) if len(seen) > 1 else 0.0
    return max(seen[1:] or seen), first_extra, result


# ----------------------------------------------------------------------------------------------------
# Sections

def students(report, data, device, cfg):
    """1. images/s per student, eager vs captured."""
    for name, theta in THETAS.items():
        modes = [("eager, bf16, channels_last", dict(capture="off"), cfg.eager_images),
                 ("captured, bf16, channels_last", dict(), cfg.images),
                 ("captured, bf16, contiguous", dict(channels_last="off"), cfg.images),
                 ("captured, fp32, channels_last", dict(amp="off"), cfg.images)]
        for label, options, n in modes:
            if report.left() < 20:
                return
            model, arch = student(theta, data, max_params=cfg.max_params)
            part = subset(data, n, cfg.batch)
            protocol = T.Protocol(epochs=cfg.epochs, batch_size=cfg.batch, bn_batches=1, **options)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rate, extra, result = fit_rate(model, part, protocol, device)
            c = result["config"]
            done = (f"{'captured' if c['capture'] else 'eager'}, {c['amp']}, "
                    f"{'channels_last' if c['channels_last'] else 'contiguous'}")
            report.add("students", f"{name} ({arch['params'] / 1e6:.2f} M params): {label}", round(rate, 1),
                       "img/s" + ("" if done == label else f" (ran as: {done})"))
            report.keep[name, label] = rate
            if label.startswith("captured, bf16, channels_last"):
                report.add("students", f"{name}: first epoch's extra time (warm-up, recording)", round(extra, 2), "s")
                if device.type == "cuda":
                    report.add("students", f"{name}: peak memory of one student", round(
                        torch.cuda.max_memory_allocated(device) / 2**20, 1), "MiB, batch 96 training")
            del model


def capture_check(report, data, device, cfg):
    """2. captured vs eager losses over 3 epochs of 6 steps (fp32 without TF32, dropout off: the same
    arithmetic up to cuDNN's choice of kernels), the learning rate changing between epochs."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    losses = {}
    try:
        for name, mode in (("eager", "off"), ("eager again", "off"), ("captured", "auto")):
            model, _ = student(THETAS["middle"], data, max_params=cfg.max_params)
            for m in model.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p = 0.0
            protocol = T.Protocol(epochs=3, batch_size=cfg.batch, amp="off", capture=mode, bn_batches=1)
            result = T.fit(model, subset(data, cfg.batch * 6, cfg.batch), protocol,
                           options=T.RunOptions(device=device, log=lambda _: None))
            losses[name] = [row["loss"] for row in result["history"]]
            losses[name + " ran captured"] = result["config"]["capture"]
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    for other in ("eager again", "captured"):  # the first is the spread of eager itself, the baseline
        gaps = [abs(a - b) / abs(a) for a, b in zip(losses["eager"], losses[other])]
        report.add("capture", f"relative gap of each epoch's loss, {other} vs eager", ", ".join(f"{g:.1e}" for g in gaps),
                   f"eager {[round(v, 5) for v in losses['eager']]}, {other} {[round(v, 5) for v in losses[other]]} "
                   f"(ran captured: {losses[other + ' ran captured']})")


def kd_costs(report, data, device, cfg):
    """3. KD step / CE step with the live teacher and with lessons looked up (middle θ, captured)."""
    teacher = teachers.build("darts", data.num_classes, width=cfg.teacher_width, layers=cfg.teacher_layers)
    part = subset(data, cfg.images, cfg.batch)
    amp, autocast, _ = T.precision(T.Protocol(), device)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float32
    p = data.preset
    views = (2 if p.flip else 1, 2 * p.pad + 1, 2 * p.pad + 1)
    table = lessons.Lessons(torch.randn(len(part.train), *views, data.num_classes, device=device).to(dtype), {})
    rates = {}
    for label, kd_teacher, alpha in (("cross-entropy", None, 0.0), ("KD, live teacher", teacher, 0.9),
                                     ("KD, lessons looked up", table, 0.9)):
        model, _ = student(THETAS["middle"], data, max_params=cfg.max_params)
        protocol = T.Protocol(epochs=cfg.epochs, batch_size=cfg.batch, bn_batches=1)
        rates[label], _, _ = fit_rate(model, part, protocol, device, kd_teacher, alpha)
        report.add("KD", f"middle θ, {label}", round(rates[label], 1), "img/s")
    for label in ("KD, live teacher", "KD, lessons looked up"):
        report.add("KD", f"{label}: KD step / cross-entropy step", round(rates["cross-entropy"] / rates[label], 3),
                   "goal <= 1.05")
    # the lessons' own cost: the teacher over every view of some images, extrapolated to the whole set
    few = subset(data, cfg.lesson_images, cfg.batch)
    teacher.to(device, memory_format=torch.channels_last)
    lessons.compute(teacher, few, autocast, torch.channels_last, dtype, {})  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    lessons.compute(teacher, few, autocast, torch.channels_last, dtype, {})
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rate = cfg.lesson_images * views[0] * views[1] * views[2] / (time.perf_counter() - t)
    report.add("KD", f"lessons: teacher forward over every view (DARTS C={cfg.teacher_width}, {cfg.teacher_layers} cells)",
               round(rate, 1), "views/s")
    report.add("KD", "lessons for the CIFAR search's 45,000 images x 162 views, at that rate",
               round(45000 * 162 / rate, 1), "s (extrapolated)")


def pipeline(report, data, device, cfg):
    """4. the data pipeline's share of a captured middle-θ step."""
    gen = data.generator(0)
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    times = []
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t, n = time.perf_counter(), 0
        for _ in D.batches(data, data.train, cfg.batch, train=True, gen=gen, memory_format=layout):
            n += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t) / n)
    per_batch = min(times)
    step = cfg.batch / report.keep.get(("middle", "captured, bf16, channels_last"), float("nan"))
    report.add("data", f"on-device augmentation, one batch of {cfg.batch} (epoch of {len(data.train):,})",
               round(per_batch * 1e3, 3), "ms")
    report.add("data", "its share of a captured middle-θ step", f"{100 * per_batch / step:.2f} %", "goal < 2 %")


def several(report, data_args, device, cfg, mode):
    """5. aggregate images/s of n students on one GPU: threads of one process, or separate processes."""
    settings = SimpleNamespace(dataset=data_args["dataset"], data_dir=data_args["data_dir"], split="search",
                               cache_dir=data_args["cache_dir"], val_size=None, no_kd=True, teacher=None,
                               workers_per_gpu=max(cfg.students), lessons=None, lessons_key=None)
    env = {}
    if mode == "processes under MPS":
        env = start_mps()
        if env is None:
            report.add("several", "processes under MPS", "not measured", "nvidia-cuda-mps-control could not start")
            return
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the spawned workers inherit it
    try:
        counts = cfg.students if mode == "threads" else cfg.process_students
        pool = machinery_pool.Pool([(str(device), max(counts))] if mode == "threads" else
                                   [(str(device), 1)] * max(counts), T.Worker.load, (settings,))
        try:
            for n in counts:
                if report.left() < 25:
                    break
                futures = [pool.submit(with_worker(steady_student), cfg.images, cfg.epochs + 1, cfg.batch, seed, cfg.max_params)
                           for seed in range(n)]
                runs = [f.result(timeout=max(10, min(120, report.left() - 10))) for f in futures]
                start = max(r["steady_start"] for r in runs)
                end = min(r["end"] for r in runs)
                images = sum(r["rate"] * (end - start) for r in runs)
                report.add("several", f"{n} student(s), {mode}", round(images / (end - start), 1),
                           f"img/s in all (middle θ; captured: {all(r['captured'] for r in runs)})")
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        if env:
            subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, env={**os.environ, **env},
                           timeout=20, capture_output=True)


def steady_student(worker, n_images, epochs, batch, seed, max_params):
    """In a worker: the middle θ trained on n_images; its rate after the first epoch, and when."""
    part = subset(worker.data, n_images, batch)
    model, _ = student(THETAS["middle"], part, seed, max_params)
    ends = []
    result = T.fit(model, part, T.Protocol(epochs=epochs, batch_size=batch, bn_batches=1, eval_every=epochs),
                   options=T.RunOptions(device=worker.device, seed=seed, own_rng=False,
                                        log=lambda _: ends.append(time.time())))
    rates = [row["images_per_s"] for row in result["history"][1:]]
    return {"rate": statistics.median(rates), "steady_start": ends[0], "end": ends[-1],
            "captured": result["config"]["capture"]}


def start_mps():
    """Start an NVIDIA MPS control daemon for this run's processes (its own pipe folder); None if not."""
    if shutil.which("nvidia-cuda-mps-control") is None:
        return None
    folder = tempfile.mkdtemp(prefix="mps-")
    env = {"CUDA_MPS_PIPE_DIRECTORY": folder, "CUDA_MPS_LOG_DIRECTORY": folder}
    r = subprocess.run(["nvidia-cuda-mps-control", "-d"], env={**os.environ, **env}, capture_output=True,
                       text=True, timeout=20)
    return env if r.returncode == 0 else None


def teacher_training(report, data, device, cfg):
    """6. the DARTS teacher's training images/s (full size), eager and captured."""
    for label, capture in (("eager", "off"), ("captured", "auto")):
        torch.manual_seed(0)
        net = teachers.build("darts", data.num_classes, width=cfg.teacher_width, layers=cfg.teacher_layers)
        protocol = T.Protocol(epochs=cfg.epochs, batch_size=cfg.batch, capture=capture, bn_batches=1)
        rate, _, result = fit_rate(net, subset(data, cfg.images, cfg.batch), protocol, device)
        report.add("teacher", f"DARTS C={cfg.teacher_width}, {cfg.teacher_layers} cells, training: {label}", round(rate, 1),
                   f"img/s (captured: {result['config']['capture']})")


COMPILE = """
import sys, time, torch
sys.path.insert(0, {root!r})
import generator as G
theta = {theta!r}
torch.manual_seed(0)
model = G.build(G.sample(theta, 0)).to("cuda", memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(96, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (96,), device="cuda")
def step():
    with torch.autocast("cuda", torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(cmodel(x).float(), y)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
cmodel = torch.compile(model, mode="reduce-overhead")
t = time.perf_counter(); step(); step(); torch.cuda.synchronize(); compile_s = time.perf_counter() - t
for _ in range(5): step()
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(20): step()
torch.cuda.synchronize()
print("RESULT", compile_s, (time.perf_counter() - t) / 20)
"""


def compile_check(report, device, cfg, name):
    """7. torch.compile of one student's forward (and backward), in a subprocess with a time limit."""
    limit = int(min(cfg.compile_s, report.left() - 30))
    code = COMPILE.format(root=str(ROOT), theta=THETAS[name])
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        report.add("compile", f"{name}: torch.compile reduce-overhead", "not finished", f"still compiling after {limit} s")
        return
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
    if not line:
        report.add("compile", f"{name}: torch.compile reduce-overhead", "failed", (r.stderr.strip().splitlines() or ["?"])[-1])
        return
    compile_s, step_s = map(float, line[0].split()[1:])
    report.add("compile", f"{name}: compile time (first two steps)", round(compile_s, 1), "s")
    report.add("compile", f"{name}: compiled step (fwd + bwd + SGD), batch 96", round(96 / step_s, 1), "img/s")


def mini_search(report, data_args, device, cfg, out):
    """8. search.py end to end on this GPU: spawned workers, several per GPU, KD with lessons, AMP."""
    teacher_path = out / "tiny_teacher.pt"
    net = teachers.build("darts", 10, width=8, layers=5)
    files.save_checkpoint(teacher_path, {"model": net.state_dict(), "epoch": 1, "config": {
        "arch": "darts", "arch_options": {"width": 8, "layers": 5}, "dataset": data_args["dataset"],
        "num_classes": 10}})
    folder = out / "mini_search"
    shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, str(ROOT / "search.py"), "--dataset", data_args["dataset"], "--teacher",
               str(teacher_path), "--out", str(folder), "--iterations", "1", "--seed", "0"] + cfg.search_args
    if data_args["data_dir"]:
        command += ["--data-dir", data_args["data_dir"]]
    if data_args["cache_dir"]:
        command += ["--cache-dir", data_args["cache_dir"]]
    t = time.perf_counter()
    with open(out / "mini_search.log", "w") as log:  # kept when the search runs out of time too
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            returncode = process.wait(timeout=max(10, report.left() - 15))
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = "killed: out of time"
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()] \
        if (folder / "results.jsonl").is_file() else []
    report.add("search", f"mini search ({len(records)} evaluations, exit {returncode})",
               round(time.perf_counter() - t, 1), "s wall, spawn and lessons included")
    ok = [x for x in records if x["loss"] is not None]
    report.add("search", "evaluations that succeeded / captured / with lessons",
               f"{len(ok)} / {sum(bool(x['info'].get('capture')) for x in ok)} / "
               f"{sum(x['info'].get('lessons') == 'cached' for x in ok)}", "best.json " +
               ("written" if (folder / "best.json").is_file() else "missing"))


# ----------------------------------------------------------------------------------------------------

class Sizes:
    """Sizes of the measurements: real on a GPU, tiny for --cpu-smoke."""

    def __init__(self, smoke):
        self.batch = 96 if not smoke else 16
        self.epochs = 3 if not smoke else 2
        self.images = self.batch * (40 if not smoke else 2)
        self.eager_images = self.batch * (15 if not smoke else 2)
        self.lesson_images = 512 if not smoke else 8
        self.teacher_width, self.teacher_layers = (36, 20) if not smoke else (4, 3)
        self.students = (1, 2, 4, 8) if not smoke else (1, 2)
        self.process_students = (4,) if not smoke else (2,)
        self.compile_s = 150
        self.max_params = None if not smoke else 120_000  # the paper's 4.0 M on a GPU
        self.search_args = (["--gpus", "1", "--workers-per-gpu", "4", "--val-size", "48000", "--min-budget", "1",
                             "--max-budget", "2"] if not smoke else
                            ["--gpus", "0", "--workers", "1", "--max-params", "120000", "--batch-size", "64",
                             "--min-budget", "1", "--max-budget", "1", "--study", "0"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="CIFAR-10: an image folder train/<class>/*.jpg + test/<class>/*.jpg "
                                                    "(or torchvision's batches)")
    p.add_argument("--cache-dir", default=None, help="decoded image cache (default: a folder under --out)")
    p.add_argument("--out", default="gpu_check", help="folder for gpu_check.json, gpu_check.md and logs")
    p.add_argument("--budget-s", type=float, default=450, help="stop starting sections after this many seconds")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (digits), for the test suite")
    p.add_argument("--record", action="store_true", help="write the table into bench/RESULTS.md")
    p.add_argument("--only", default=None, help="comma-separated sections to run (default: all), e.g. several,search")
    args = p.parse_args(argv)
    out = Path(args.out)
    smoke, cfg = args.cpu_smoke, Sizes(args.cpu_smoke)
    device = torch.device("cpu" if smoke else "cuda:0")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU here; run with --cpu-smoke for the CPU check")
    report = Report(args.budget_s, out, args.only.split(",") if args.only else None)
    report.machine = machine(device)
    print(report.machine, flush=True)
    data_args = {"dataset": "digits" if smoke else "cifar10", "data_dir": args.data_dir,
                 "cache_dir": args.cache_dir or str(out / "cache")}
    t = time.perf_counter()
    data = D.load_data(data_args["dataset"], data_args["data_dir"], "search", device=device,
                       cache_dir=data_args["cache_dir"])
    report.add("setup", f"{data.name} loaded on {device} ({len(data.train):,} training images)",
               round(time.perf_counter() - t, 1), "s")
    report.section("students", 60, students, data, device, cfg)
    report.section("capture", 15, capture_check, data, device, cfg)
    report.section("KD", 30, kd_costs, data, device, cfg)
    report.section("data", 10, pipeline, data, device, cfg)
    report.section("several: threads", 40, several, data_args, device, cfg, "threads")
    report.section("teacher", 25, teacher_training, data, device, cfg)
    report.section("search", 45, mini_search, data_args, device, cfg, out)
    for mode in ("processes",) + (("processes under MPS",) if device.type == "cuda" else ()):
        report.section(f"several: {mode}", 40, several, data_args, device, cfg, mode)
    if device.type == "cuda":  # last: it may take longer than the time left, and says so
        report.section("compile", 45, compile_check, device, cfg, "middle")
    table = report.markdown()
    print("\n" + table)
    if args.record:
        record("gpu_check", "GPU check (bench/gpu_check.py)", "python bench/gpu_check.py --data-dir DIR --record",
               f"{report.machine}\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
