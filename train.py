"""Train one network with the KD loss: AutoKD's evaluation function f_KD(θ, b) (paper Alg. 1 line 7:
sample a student from G(θ), train it b epochs with L_KD of Eq. 1-2, return validation accuracy), the
600-epoch retraining of the found students (Sec. 4, Table 1), and the teachers' own training.

    python train.py --theta theta.json --seed 0 --dataset cifar10 --epochs 30 --teacher teacher.pt
    python train.py --arch darts --dataset cifar10 --split final --download --save teacher.pt
    python train.py --arch darts --dataset digits --split final --width 16 --layers 8 --epochs 20 \\
        --save runs/teacher_digits.pt                  # offline: the quick start's teacher, a minute

Read top to bottom: the protocol -> kd_step, the step of Eq. 2 -> one epoch and the scores -> fit,
the epoch loop -> f_KD -> a worker's data and teacher -> the command line. Prints one line per epoch
and then one JSON summary line.
"""
import dataclasses
import functools
import json
import math
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import generator
import teachers
from data import DATASETS, batches, load_data
from kd_loss import SPACE as KD_SPACE, check_kd_params, kd_loss
from machinery import cli, files, pool, schema
from machinery.capture import DEVICE_RNG_LOCK, SGD, CapturedStep, kernels, learning_rate, precision, set_lr
from machinery.executor import with_worker
from teachers import lessons

TAU, ALPHA = 4.0, 0.9  # the usual KD setting (paper Sec. 3.1) when no searched value is given
SCHEDULES = ("cosine", "step")  # learning_rate's schedules


def knob(default, kind, text, aliases=None):
    """A Protocol field with its command-line flag: kind parses it (a tuple: the choices), text is
    its help, aliases maps other spellings a flag accepts to a choice; add_protocol_flags makes the flags."""
    return field(default=default, metadata={"kind": kind, "help": text, "aliases": aliases or {}})


@dataclass(frozen=True)
class Protocol:
    """How a network is trained. The defaults are DARTS's (Liu et al. 2019), which the paper's
    retraining and teachers follow; search.SEARCH_PROTOCOLS hold the search phase's (Ru et al. 2020)."""
    epochs: int = knob(600, cli.epochs, "training epochs (final training; search budgets: 30/60/120)")
    batch_size: int = knob(96, cli.images, "batch size, at most the training images")
    lr: float = knob(0.025, cli.positive_float, "peak SGD learning rate at batch 96, scaled linearly with "
                                                   "--batch-size")
    schedule: str = knob("cosine", SCHEDULES, "learning rate schedule: cosine to 0 over --epochs (DARTS), or step: "
                                              "times --lr-gamma every --lr-step epochs (NAGO's search)")
    lr_step: int = knob(20, cli.positive_int, "step schedule: epochs between two decays")
    lr_gamma: float = knob(0.5, cli.positive_float, "step schedule: factor of each decay")
    momentum: float = knob(0.9, cli.fraction, "SGD momentum (Nesterov off)")
    weight_decay: float = knob(3e-4, cli.nonnegative_float, "weight decay")
    grad_clip: float = knob(5.0, cli.nonnegative_float, "maximum global gradient norm (0: no clipping)")
    aux_weight: float = knob(0.4, cli.nonnegative_float, "weight of an auxiliary head's cross-entropy, for "
                                                            "models that have one (the DARTS teacher)")
    cutout: int = knob(None, cli.nonnegative_int, "cutout side in px (default: the data set's in final runs, "
                                                     "16 for CIFAR; 0 in search)")
    eval_every: int = knob(1, cli.epochs, "score every N epochs and after the last")
    bn_batches: int = knob(20, cli.nonnegative_int, "training batches that re-estimate BatchNorm statistics "
                                                       "before each score (0: off)")
    amp: str = knob("auto", ("auto", "bf16", "fp16", "off"), "mixed precision; auto: bf16 autocast on CUDA (fp16 "
                                                            "with a GradScaler without bf16), off on the CPU")
    channels_last: str = knob("auto", ("auto", "on", "off"), "channels_last memory format; auto: on for CUDA")
    # Eager by default until the captured step is shown to train like eager on the present networks
    # (bench/gpu_check.py's "correct" section: step 1 within 1e-6, then tracking under deterministic kernels).
    capture: str = knob("off", ("off", "on"), "on: record the training step once as a CUDA graph and replay it "
                                              "(CUDA only; auto is read as on); off: eager", {"auto": "on"})
    deterministic: str = knob("off", ("off", "on"), "on, for checks: deterministic kernels (cuDNN deterministic, no "
                                                    "kernel timing) and no TF32; off: the fastest kernels")

    def replace(self, **changes):
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


# Settings a resumed run must share with its checkpoint; the others (device, capture, ...) may change.
RESUME_KEYS = ("arch", "arch_options", "dataset", "split", "train_size", "num_classes", "epochs",
               "batch_size", "lr", "schedule", "lr_step", "lr_gamma", "momentum", "weight_decay", "grad_clip",
               "aux_weight", "tau", "alpha", "seed", "cutout", "amp", "bn_batches")
# generator.build's options for a student (f_kd), at their defaults: off, as NAGO's search trains.
STUDENT_BUILD = {"auxiliary": False, "drop_path_prob": 0.0}
# What a file written before a setting existed means by its absence: how that version trained.
BEFORE = {"schedule": "cosine", "lr_step": Protocol.lr_step, "lr_gamma": Protocol.lr_gamma}


def as_now(saved):
    """A checkpoint's config, or a search's or retraining's saved protocol, with the settings added since
    it was written at the values its version used: the cosine schedule; for a student, the even stage
    rule and neither auxiliary head nor drop path. A resumed run compares this with its own settings."""
    saved = {**BEFORE, **saved}
    student = saved.get("arch_options")
    if saved.get("arch") == "nago" and isinstance(student, dict) and isinstance(student.get("arch"), dict):
        saved["arch_options"] = {**STUDENT_BUILD, **student,
                                 "arch": {**student["arch"], "stages_rule": generator.stages_rule(student["arch"])}}
    return saved


# Protocol fields that say how the kernels run, not what is trained: a resumed run, search or
# retraining may change them.
EXECUTION = ("capture", "deterministic")


def settings_json(settings):
    """search.json's or retrain.json's "settings" (a Settings dataclass holding a Protocol): the
    protocol without EXECUTION's fields, which may change on resume; those beside it."""
    s = dataclasses.asdict(settings)
    s["protocol"] = {k: v for k, v in s["protocol"].items() if k not in EXECUTION}
    return {**s, **{k: getattr(settings.protocol, k) for k in EXECUTION}}


# ----------------------------------------------------------------------------------------------------
# The KD training step and one epoch (Alg. 1 line 7's inner loop)

def kd_step(run, x, y, lesson):
    """One step of L_KD (Eq. 2) on a batch x (B, 3, S, S), labels y (B,): the teacher's lesson (B, K),
    looked up or computed live; the student's forward; the loss; backward; clipping; SGD. Returns
    (loss, logits) on the device. machinery.capture.CapturedStep replays this same function on CUDA."""
    run.optimizer.zero_grad(set_to_none=False)
    with run.autocast:
        if run.teacher is not None:
            with torch.no_grad():
                lesson = run.teacher(x)                                # (B, K)
        out = run.model(x)
        logits, aux = out if isinstance(out, tuple) else (out, None)   # (B, K) each
        loss = kd_loss(logits, lesson, y, run.tau, run.alpha)
        if aux is not None:  # Interpretation: an auxiliary head learns from the labels only, as in DARTS
            loss = loss + run.protocol.aux_weight * F.cross_entropy(aux.float(), y)
    run.scaler.scale(loss).backward()
    if run.protocol.grad_clip:
        run.scaler.unscale_(run.optimizer)  # clip the true gradients (a no-op without fp16)
        torch.nn.utils.clip_grad_norm_(run.params, run.protocol.grad_clip, foreach=True)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return loss.detach(), logits.detach()


def train_epoch(run, gen):
    """One pass over the training images with L_KD. Returns (mean loss, accuracy, images seen); the
    host waits once, at the end."""
    run.model.train()
    loss_sum = torch.zeros((), device=run.data.device)
    correct = torch.zeros((), device=run.data.device, dtype=torch.int64)
    seen = 0
    for x, y, views in batches(run.data, run.data.train, run.protocol.batch_size, train=True, gen=gen,
                               cutout_size=run.cutout, workers=run.options.workers, memory_format=run.memory_format):
        lesson = run.lessons(views) if run.lessons is not None else None   # (B, K) looked up, or live
        loss, logits = run.step(x, y, lesson)                              # kd_step, maybe replayed
        loss_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    return loss_sum.item() / seen, correct.item() / seen, seen


# ----------------------------------------------------------------------------------------------------
# BatchNorm statistics and scores

def recalibrate_bn(model, data, n_batches, batch_size, autocast, memory_format, workers=2):
    """Interpretation (BatchNorm at short budgets): before a score, every BatchNorm's running mean and
    variance are recomputed as plain averages over the first `n_batches` training batches (no
    augmentation), as torch.optim.swa_utils.update_bn does over a whole loader, so that a short-budget
    score measures the weights rather than the lag of the running averages. Training never reads them."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or n_batches == 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad(), autocast, DEVICE_RNG_LOCK.hold():  # dropout draws from the device's generator
        for _, (x, _, _) in zip(range(n_batches), batches(data, data.train, batch_size, train=False,
                                                          workers=workers, memory_format=memory_format)):
            model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def score(model, data, part, batch_size, autocast=nullcontext(), memory_format=torch.contiguous_format,
          workers=2):
    """(accuracy, mean cross-entropy) of `model` on `part` (no augmentation), in eval mode."""
    model.eval()
    correct = torch.zeros((), device=data.device, dtype=torch.int64)
    loss = torch.zeros((), device=data.device)
    with torch.inference_mode(), autocast:
        for x, y, _ in batches(data, part, batch_size, train=False, workers=workers,
                               memory_format=memory_format):
            logits = model(x).float()                                  # (B, K)
            loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    return correct.item() / len(part), loss.item() / len(part)


def score_run(run):
    """BatchNorm statistics re-estimated, then (accuracy, loss) on data.eval."""
    recalibrate_bn(run.model, run.data, run.protocol.bn_batches, run.protocol.batch_size, run.autocast,
                   run.memory_format, run.options.workers)
    return score(run.model, run.data, run.data.eval, 4 * run.protocol.batch_size, run.autocast,
                 run.memory_format, run.options.workers)


# ----------------------------------------------------------------------------------------------------
# fit: the epoch loop

@dataclass(frozen=True)
class RunOptions:
    """Where one training run goes, apart from how it trains (Protocol)."""
    device: str = "cpu"
    seed: int = 0                 # the data order, augmentation, dropout and drop path
    save: str = None              # a checkpoint written after every epoch
    resume: bool = False          # continue `save` (same settings)
    stop_after: int = None        # stop after this epoch; the schedule still spans protocol.epochs
    config: dict = None           # more settings to keep in checkpoints and results
    workers: int = 2              # DataLoader workers (224 px data sets)
    own_rng: bool = True          # seed the global torch RNG here; False where students share a process
    log: object = print           # called with each epoch's progress line


def fit(model, data, protocol=Protocol(), teacher=None, tau=TAU, alpha=0.0, options=RunOptions()):
    """Train `model` on `data` under `protocol` with L_KD (Eq. 2) at temperature `tau` and weight
    `alpha` from `teacher` (a network, or a teachers.lessons.Lessons table; none at alpha = 0), then
    score it on data.eval: the hold-out in search mode, the test set in final mode. Returns
    {"accuracy", "loss", "wall_s", "images_per_s", "epochs", "failed", "error", "history", "config"};
    a non-finite loss ends the run with failed=True, so that a search goes on."""
    check_save(options.save, options.resume)
    run = setup(model, data, protocol, teacher, tau, alpha, options)
    end = protocol.epochs if options.stop_after is None else min(protocol.epochs, options.stop_after)
    with device_rng(run):
        gen = data.generator(options.seed)  # the data order and the augmentation draw from here
        resumed = options.save is not None and Path(options.save).exists()
        history, clock, start = restore(run, gen) if resumed else ([], CLOCK, 0)
        set_lr(run.optimizer, learning_rate_at(run.peak, start, protocol))
        failed, session = None, time.perf_counter()
        for epoch in range(start, end):
            t0 = time.perf_counter()
            if run.drop_path_max is not None:  # DARTS's linear ramp from 0 to the model's maximum
                model.drop_path_prob = run.drop_path_max * epoch / protocol.epochs
            loss, accuracy, seen = train_epoch(run, gen)  # Alg. 1 line 7: one epoch of L_KD
            set_lr(run.optimizer, learning_rate_at(run.peak, epoch + 1, protocol))  # the schedule, per epoch
            train_s = time.perf_counter() - t0
            if not math.isfinite(loss):  # a diverged student fails its evaluation; a search goes on
                failed = f"the training loss became {loss} in epoch {epoch + 1}; lower --lr or try another configuration"
                break
            row = {"epoch": epoch + 1, "loss": loss, "train_accuracy": accuracy,
                   "lr": float(run.optimizer.param_groups[0]["lr"]), "images_per_s": seen / train_s}
            if (epoch + 1) % protocol.eval_every == 0 or epoch + 1 == end:
                row["accuracy"], row["eval_loss"] = score_run(run)  # the hold-out (search) or test (final)
            clock = tick(clock, t0, train_s, seen)
            history.append({**row, "elapsed_s": clock["wall_s"]})
            eta = (time.perf_counter() - session) / (epoch + 1 - start) * (protocol.epochs - epoch - 1)
            options.log(progress_line(history[-1], protocol.epochs, data.split, eta))
            if options.save is not None:
                checkpoint(run, epoch + 1, history, clock, gen)
    return result(run, history, clock, failed)


@dataclass
class Run:
    """The resolved pieces of one training run, which fit, kd_step and their helpers share."""
    model: nn.Module
    data: object
    protocol: Protocol
    options: RunOptions
    device: torch.device
    teacher: nn.Module       # a live teacher (computed each step), or None
    lessons: object          # the teacher's lessons looked up (teachers.lessons.Lessons), or None
    tau: float
    alpha: float
    optimizer: SGD = None
    scaler: torch.amp.GradScaler = None
    params: list = None      # the parameters clipped and trained
    autocast: object = None
    memory_format: torch.memory_format = None
    cutout: int = 0
    peak: float = 0.0        # the peak learning rate at this batch size
    drop_path_max: float = None  # the drop path probability that DARTS's ramp reaches at the end
    step: object = None      # kd_step, or machinery.capture.CapturedStep replaying it
    cfg: dict = None         # every setting, kept in checkpoints and results


def setup(model, data, protocol, teacher, tau, alpha, options):
    """Resolve a run: precision and memory format for the device, the teacher (live network or
    looked-up lessons; none at alpha = 0), the optimiser and the step, and every setting in `cfg`."""
    check_kd_params(tau, alpha, teacher is not None)
    device = torch.device(options.device)
    amp, autocast, memory_format = precision(protocol, device)
    cutout = (data.preset.cutout if data.split == "final" else 0) if protocol.cutout is None else protocol.cutout
    capture = device.type == "cuda" and protocol.capture != "off" and amp != "fp16"  # GradScaler syncs
    kernels(protocol, device)
    model.to(device, memory_format=memory_format)
    teacher = teacher if alpha > 0 else None
    live = teacher if isinstance(teacher, nn.Module) else None
    if live is not None:  # NHWC for the DARTS teacher's separable convolutions on every device (bench/train_speed.py)
        live.to(device, memory_format=torch.channels_last).eval()
    peak = protocol.lr * protocol.batch_size / Protocol.batch_size
    run = Run(model, data, protocol, options, device, live, teacher if live is None else None, tau, alpha,
              autocast=autocast, memory_format=memory_format, cutout=cutout, peak=peak,
              drop_path_max=getattr(model, "drop_path_prob", None),
              params=[p for p in model.parameters() if p.requires_grad])
    run.optimizer = SGD(run.params, learning_rate(peak, device, capture), protocol.momentum, protocol.weight_decay)
    run.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    run.step = CapturedStep(functools.partial(kd_step, run), model, run.optimizer, protocol.batch_size, capture)
    run.cfg = {**(options.config or {}), **dataclasses.asdict(protocol), "dataset": data.name, "split": data.split,
               "train_size": len(data.train), "num_classes": data.num_classes, "image_size": data.image_size,
               "drop_path_prob": getattr(model, "drop_path_prob", None), "tau": tau, "alpha": alpha,
               "seed": options.seed, "amp": amp, "channels_last": memory_format == torch.channels_last,
               "cutout": cutout, "capture": capture, "device": str(device),
               "lessons": None if teacher is None else "live" if live is not None else "cached"}
    return run


CLOCK = {"wall_s": 0.0, "train_s": 0.0, "images": 0}


def tick(clock, t0, train_s, images):
    """The run's clock after an epoch that started at t0 and trained `images` in `train_s` seconds."""
    return {"wall_s": clock["wall_s"] + time.perf_counter() - t0, "train_s": clock["train_s"] + train_s,
            "images": clock["images"] + images}


@contextmanager
def device_rng(run):
    """Seed the global torch RNG (dropout, drop path) from the run's seed and restore it afterwards;
    nothing where students share a process (options.own_rng False: they share its stream)."""
    if not run.options.own_rng:
        yield
        return
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        torch.manual_seed(run.options.seed)
        yield


def check_save(save, resume):
    """A checkpoint path that exists is continued only when asked (--resume), never overwritten."""
    if save is not None and Path(save).exists() and not resume:
        raise cli.UserError(f"{save} already exists; pass --resume to continue it or delete it")


def result(run, history, clock, failed):
    """fit's result: the last score (scored now if a resumed run had just ended), times, settings."""
    if run.cfg["capture"] and history:  # what really ran
        run.cfg["capture"] = run.step.graph is not None
    run.cfg["capture_error"] = run.step.failure
    last = history[-1] if history else {}
    if failed is None and history and "accuracy" not in last:
        last["accuracy"], last["eval_loss"] = score(run.model, run.data, run.data.eval, 4 * run.protocol.batch_size,
                                                    run.autocast, run.memory_format, run.options.workers)
    return {"accuracy": None if failed else last.get("accuracy"),
            "eval_split": "val" if run.data.split == "search" else "test",
            "eval_loss": None if failed else last.get("eval_loss"),
            "loss": last.get("loss"), "train_accuracy": last.get("train_accuracy"), "wall_s": clock["wall_s"],
            "images_per_s": clock["images"] / clock["train_s"] if clock["train_s"] else None,
            "epochs": len(history), "failed": failed is not None, "error": failed, "history": history,
            "config": run.cfg}


def learning_rate_at(peak, epoch, protocol):
    """The learning rate of epoch `epoch` (from 0) under protocol.schedule, from the peak rate."""
    if protocol.schedule == "step":
        return step_decay(peak, epoch, protocol.lr_step, protocol.lr_gamma)
    return cosine(peak, epoch, protocol.epochs)


def cosine(peak, epoch, epochs):
    """SGDR's cosine without restarts (DARTS's schedule): the learning rate of epoch `epoch`."""
    return peak * (1 + math.cos(math.pi * epoch / epochs)) / 2


def step_decay(peak, epoch, step, gamma):
    """torch's StepLR (NAGO's search schedule, nago.yml: step 20, gamma 0.5): the peak rate times gamma
    once every `step` epochs. Interpretation: VEGA steps its StepLR with the index of the epoch just
    finished, so there the first rate lasts step + 1 epochs; we keep torch's documented step."""
    return peak * gamma ** (epoch // step)


def progress_line(row, epochs, split, eta_s):
    score_text = (f"  {'val' if split == 'search' else 'test'} {row['accuracy']:6.2%}"
                  if "accuracy" in row else "")
    return (f"epoch {row['epoch']:4d}/{epochs}  loss {row['loss']:.4f}  "
            f"train {row['train_accuracy']:6.2%}{score_text}  {row['images_per_s']:7.0f} img/s  "
            f"elapsed {cli.hms(row['elapsed_s'])}  eta {cli.hms(eta_s)}")


# ----------------------------------------------------------------------------------------------------
# Checkpoints: a run resumes exactly

def checkpoint(run, epoch, history, clock, gen):
    """Everything a run needs to continue exactly: model, optimiser, scaler, RNG states (the learning
    rate follows from the epoch)."""
    cuda = run.device.type == "cuda"
    files.save_checkpoint(run.options.save, {
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "epoch": epoch, "history": history, "clock": clock,
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(run.device) if cuda else None,
                "data": gen.get_state()},
        "versions": files.versions(), "config": run.cfg})


def restore(run, gen):
    """Load the checkpoint written by `checkpoint` into the run; returns (history, clock, epoch)."""
    path = run.options.save
    state = schema.check("resumable checkpoint", load_checkpoint(path), path)  # RNG states on the CPU
    files.check_resume(as_now(state["config"]), run.cfg, RESUME_KEYS, path, "resume with the same settings, or start a "
                       "new file", error=files.CheckpointError)
    try:
        run.model.load_state_dict(state["model"])
    except RuntimeError:
        raise files.CheckpointError(f"{path} holds another architecture than the model given; resume "
                                    f"with the same --theta/--arch and seed") from None
    run.optimizer.load_state_dict(state["optimizer"])
    for group in run.optimizer.param_groups:  # a float or a device tensor, as this run's step needs
        group["lr"] = learning_rate(group["lr"], run.device, run.cfg["capture"])
    if state["scaler"] is not None:
        run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    if run.device.type == "cuda" and state["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state(state["rng"]["cuda"], run.device)
    gen.set_state(state["rng"]["data"])
    run.options.log(f"resumed {path} at epoch {state['epoch']}/{run.cfg['epochs']}")
    return state["history"], state["clock"], state["epoch"]


def load_checkpoint(path):
    """A train.py checkpoint (model, epoch, config), or a CheckpointError naming the file."""
    return schema.check("checkpoint", files.load_checkpoint(path), path)


# ----------------------------------------------------------------------------------------------------
# f_KD(θ, b): one student of G(θ), trained and scored

def check_config(config, what="θ"):
    """The one checker of a configuration for every entry point: θ (generator.SPACE) and, optional,
    τ and α (kd_loss.SPACE); one sentence naming the key (and `what` holds it) when anything is wrong."""
    return cli.check_config(config, {**generator.SPACE, **KD_SPACE}, optional=tuple(KD_SPACE), what=what)


def check_batch_size(batch_size, data):
    """A batch of at most the training images: a larger one would train one short batch an epoch at
    the learning rate scaled for the batch asked for (Protocol.lr)."""
    if batch_size > len(data.train):
        raise cli.UserError(f"--batch-size {batch_size:,} is larger than the {len(data.train):,} training images of "
                            f"{data.name} ({data.split} split); give at most {len(data.train):,}.")


BUILD_LOCK = threading.Lock()  # seeding the initial weights touches the global RNG


def build_student(arch, seed, build=None):
    """The network of `arch` (generator.build's options `build`) with the initial weights that `seed`
    makes, whatever the other students of this process do meanwhile (they build under the same lock;
    a recording touches only the GPU's generator, machinery.capture)."""
    with BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return generator.build(arch, **(build or {}))


def f_kd(config, budget, arch_seed, data, teacher, protocol, options, student=None):
    """Alg. 1 line 7, f_KD(θ, b): sample the student of (θ, arch_seed) from G(θ), train it for b epochs
    with L_KD from `teacher` (τ and α from config; no teacher or α = 0: cross-entropy) and score it on
    data.eval. `student` holds generator.sample's keyword options (max_params, stages) and
    generator.build's (STUDENT_BUILD: auxiliary, drop_path_prob). Its initial weights and data order
    come from options.seed. Returns (fit's result, the architecture, the trained model). search.py
    calls it with the search budgets, retrain.py with the final protocol."""
    config = check_config(config)
    tau, alpha = (config.get("tau", TAU), config.get("alpha", ALPHA)) if teacher is not None else (TAU, 0.0)
    student = student or {}
    build = {**STUDENT_BUILD, **{k: v for k, v in student.items() if k in STUDENT_BUILD}}
    arch = generator.sample({k: config[k] for k in generator.SPACE}, arch_seed, data.image_size,
                            data.num_classes, **{k: v for k, v in student.items() if k not in STUDENT_BUILD})
    model = build_student(arch, options.seed, build)
    options = dataclasses.replace(options, config={"arch": "nago", "arch_options": {"arch": arch, **build}})
    return fit(model, data, protocol.replace(epochs=int(round(budget))), teacher, tau, alpha, options), arch, model


# ----------------------------------------------------------------------------------------------------
# A worker of search.py and retrain.py: the data and the teacher, loaded once per process

@dataclass
class Worker:
    """What one worker process (machinery.pool) holds for the students it trains: its device, the data
    set and the teacher, loaded once, and the teacher's lessons once computed. settings: search.py's
    or retrain.py's Settings (dataset, data_dir, split, val_size, cache_dir, teacher, no_kd,
    workers_per_gpu, lessons, lessons_key)."""
    device: str
    data: object
    teacher: nn.Module
    settings: dict
    lessons: object = None
    lock: object = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, device, settings):
        """The pool's init: load the data set and the teacher on `device`, and make the tensors the
        students share before any of them starts, so that none is built on one student's stream."""
        data = load_data(settings.dataset, settings.data_dir, settings.split, device=device,
                         val_size=settings.val_size, cache_dir=settings.cache_dir)
        data.materialise()
        teacher = None
        if settings.teacher and not settings.no_kd:
            teacher = teachers.load(settings.teacher, settings.dataset, data.num_classes, device)
        return cls(device, data, teacher, settings)

    def options(self, **changes):
        """RunOptions for a student of this worker: its device; the global RNG seeded per run only
        where it has the process to itself (several students of one GPU share its dropout stream)."""
        shared = self.device.startswith("cuda") and self.settings.workers_per_gpu > 1
        return RunOptions(**{"device": self.device, "own_rng": not shared, "log": lambda line: None, **changes})

    def source(self, protocol):
        """What a student distils from: the teacher's lessons looked up (computed once, see prepare),
        else the teacher itself; None for a run without KD."""
        if self.teacher is None or self.settings.lessons is None:
            return self.teacher
        with self.lock:
            if self.lessons is None:
                self.lessons = self.lessons_table(protocol)[0]
        return self.lessons

    def lessons_table(self, protocol):
        """(Lessons, seconds spent computing them): loaded from the settings' lessons file if they fit
        this run, else computed with this worker's teacher and saved there (teachers.lessons.shared)."""
        amp, autocast, _ = precision(protocol, torch.device(self.device))
        key = {**self.settings.lessons_key, "amp": amp, "train_size": len(self.data.train)}
        dtype = torch.bfloat16 if amp == "bf16" else torch.float32
        return lessons.shared(self.settings.lessons, key, self.device,
                              lambda: lessons.compute(self.teacher, self.data, autocast, torch.channels_last, dtype, key))

    def prepare(self, protocol):
        """Run once before the first student: the teacher's accuracy on the split the students are
        scored on, its profile, and its lessons computed (or loaded) when the settings ask for them."""
        data = self.data
        _, autocast, _ = precision(protocol, torch.device(self.device))
        accuracy, _ = score(self.teacher, data, data.eval, 4 * protocol.batch_size, autocast, torch.channels_last)
        seconds = 0.0
        if self.settings.lessons:
            with self.lock:
                self.lessons, seconds = self.lessons_table(protocol)
        return {"accuracy": accuracy, "split": "val" if data.split == "search" else "test", "images": len(data.eval),
                "num_classes": data.num_classes, "lessons_s": seconds,
                **generator.profile(self.teacher, data.image_size, self.device)}


def workers(settings, out):
    """The workers of search.py or retrain.py, started on their first student (machinery.pool.Lazy):
    each loads the data and the teacher once; the teacher is then checked once (out/teacher.json)."""
    def start():
        started = pool.make(settings.slots, settings.ray, Worker.load, (settings,))
        try:
            if not settings.no_kd:  # before the first student
                files.write_json(out / "teacher.json", {**check_teacher(started, settings.protocol, settings),
                                                        "teacher": settings.teacher})
        except BaseException:
            started.shutdown(wait=False, cancel_futures=True)
            raise
        return started
    return pool.Lazy(start, sum(n for _, n in settings.slots))


NEAR_CHANCE = 1.5  # a teacher below 1.5 x chance accuracy is reported as useless


def check_teacher(pool, protocol, settings):
    """Before the first student of a search or a retraining: the teacher's accuracy on the split the
    students are scored on, printed, with a warning near chance; its lessons computed once where the
    augmentation's views are finite. Returns Worker.prepare's report (written to teacher.json)."""
    if settings.lessons:
        print(f"teacher lessons: its logits for every view of every training image, computed once -> "
              f"{settings.lessons}", flush=True)
    else:
        print(f"teacher lessons: computed live at every step ({settings.lessons_live})", flush=True)
    report = pool.submit(with_worker(Worker.prepare), protocol).result()
    chance = 1 / report["num_classes"]
    where = "the hold-out" if report["split"] == "val" else "the test set"
    print(f"teacher: {100 * report['accuracy']:.2f} % on {where} ({report['images']:,} images; chance "
          f"{100 * chance:.0f} %)" + (f"; lessons computed in {report['lessons_s']:.0f} s" if report["lessons_s"] else ""),
          flush=True)
    if report["accuracy"] < NEAR_CHANCE * chance:
        print(f"warning: the teacher is near chance accuracy, so its lessons carry no knowledge: check the "
              f"teacher checkpoint {settings.teacher}, or pass --no-kd.", file=sys.stderr, flush=True)
    return report


# ----------------------------------------------------------------------------------------------------
# Command line

def build_model(args, data):
    """The network to train, its description for the checkpoint, and the θ file's τ and α."""
    if args.arch is not None and args.max_params is not None:
        raise cli.UserError("--max-params limits a --theta student; a teacher's size is set by its "
                               "architecture, so drop it")
    if args.arch is not None and args.stages is not None:
        raise cli.UserError("--stages sets how a --theta student's cells are split into stages; a teacher's "
                            "architecture fixes its own, so drop it")
    if args.theta is None:
        model, description = teachers.from_flags(args, data.num_classes)
        return model, description, {}
    for flag in ("width", "layers", "drop_path_prob", "no_auxiliary", "weights", "from_scratch"):
        if getattr(args, flag) not in (None, False):
            raise cli.UserError(f"--{flag.replace('_', '-')} applies to a teacher (--arch), not a --theta "
                                   f"student; drop it")
    config = schema.read_json(args.theta, "θ", "--theta")  # a bare θ, or a best.json
    config = check_config(config.get("config", config), what=f"{files.json_where(args.theta, '--theta')}: θ")
    arch = generator.sample({k: config[k] for k in generator.SPACE}, args.seed, data.image_size,
                            data.num_classes, max_params=args.max_params, stages=args.stages or "even")
    return generator.build(arch), {"arch": "nago", "arch_options": {"arch": arch, **STUDENT_BUILD}}, config


def add_protocol_flags(p, names=None):
    """Protocol's flags (all, or `names`), their defaults Protocol's; search.py and retrain.py take some."""
    for f in dataclasses.fields(Protocol):
        if names is None or f.name in names:
            kind, text, aliases = f.metadata["kind"], f.metadata["help"], f.metadata["aliases"]
            options = {"choices": kind, "type": lambda v, a=aliases: a.get(v, v)} if isinstance(kind, tuple) \
                else {"type": kind}
            p.add_argument("--" + f.name.replace("_", "-"), default=f.default, help=text, **options)


def add_stages_flag(p, default_text):
    """--stages, the generator's stage rule for students (search.py, retrain.py and train.py --theta)."""
    p.add_argument("--stages", choices=generator.STAGE_RULES, default=None,
                   help="how a student's cells are split into stages: even (three stages at full, 1/2 and 1/4 "
                        "resolution; an interpretation) or nago (NAGO's released rule: one stage at full "
                        f"resolution for more than 3 cells); default: {default_text}")


def parser():
    p = cli.Parser(description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--theta", help="θ as a JSON file or inline JSON (a best.json from search.py works too)")
    what.add_argument("--arch", choices=("darts", "inception_resnet_v2"), help="a teacher network")
    p.add_argument("--seed", type=cli.seed, default=0, help="seeds the architecture, the weights, the data order")
    p.add_argument("--dataset", default="cifar10", choices=DATASETS, help="data set")
    p.add_argument("--data-dir", default=None, help="data folder (default data/<dataset>); layouts in data.py")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR")
    p.add_argument("--cache-dir", default=None, help="cache of decoded image folders (default ~/.cache/autokd)")
    p.add_argument("--split", default="search", choices=("search", "final"),
                   help="search: score on a hold-out of the training set; final: train on all, score on test")
    p.add_argument("--val-size", type=cli.images, default=None,
                   help="hold-out size in search mode (default: 5,000 for CIFAR, see data.PRESETS)")
    p.add_argument("--teacher", default=None, help="teacher checkpoint for KD (teachers.load)")
    p.add_argument("--tau", type=float, default=None, help=f"KD temperature in [1, 10] (default: the θ file's, "
                                                           f"else {TAU})")
    p.add_argument("--alpha", type=float, default=None, help=f"KD weight in [0, 1] (default: the θ file's, else "
                                                             f"{ALPHA} with --teacher, 0 without)")
    p.add_argument("--max-params", type=cli.max_params, default=None,
                   help="student parameter limit, e.g. 4e6 (default: generator's, 4.0 M / 6.0 M)")
    add_stages_flag(p, "even")
    teachers.add_flags(p)
    add_protocol_flags(p)
    p.add_argument("--device", type=cli.device_name, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device")
    p.add_argument("--workers", type=cli.whole(0, 256), default=2, help="DataLoader workers (224 px data sets)")
    p.add_argument("--save", default=None, help="checkpoint written after every epoch")
    p.add_argument("--resume", action="store_true", help="continue from --save if it exists (same flags)")
    p.add_argument("--stop-after", type=cli.epochs, default=None,
                   help="stop after this epoch, e.g. to split a run across jobs; the schedule still spans --epochs")
    return p


@cli.cli
def main(argv=None):
    args = parser().parse_args(argv)
    if args.resume and args.save is None:
        raise cli.UserError("--resume continues the --save checkpoint; give --save too")
    if args.save is not None:
        check_save(args.save, args.resume)
        files.check_writable(args.save, "--save")
    data = load_data(args.dataset, args.data_dir, args.split, args.download, args.device,
                     val_size=args.val_size, cache_dir=args.cache_dir)
    check_batch_size(args.batch_size, data)
    torch.manual_seed(args.seed)  # the model's initial weights
    model, config, theta = build_model(args, data)
    tau = args.tau if args.tau is not None else theta.get("tau", TAU)
    alpha = args.alpha if args.alpha is not None else theta.get("alpha", ALPHA if args.teacher is not None else 0.0)
    check_kd_params(tau, alpha, args.teacher is not None)
    teacher = teachers.load(args.teacher, args.dataset, data.num_classes, args.device) if alpha > 0 else None
    config.update(teacher=args.teacher, data_dir=args.data_dir, val_size=args.val_size)
    protocol = Protocol(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Protocol)})
    options = RunOptions(args.device, args.seed, args.save, args.resume, args.stop_after, config, args.workers)
    result = fit(model, data, protocol, teacher, tau, alpha, options)
    summary = {k: v for k, v in result.items() if k != "history"}
    summary["profile"] = generator.profile(model, data.image_size, args.device)
    print(json.dumps(summary))
    if result["failed"]:
        raise cli.UserError(f"run failed: {result['error']}")


if __name__ == "__main__":
    sys.exit(main())
