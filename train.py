"""Train one network with the KD loss: AutoKD's evaluation function f_KD(θ, b) (paper Alg. 1 line 7:
sample a student from G(θ), train it b epochs with L_KD of Eq. 1-2, return validation accuracy), the
600-epoch retraining of the found students (Sec. 4, Table 1), and the teachers' own training.

    python train.py --theta theta.json --seed 0 --dataset cifar10 --epochs 30 --teacher teacher.pt
    python train.py --arch darts --dataset cifar10 --split final --download --save teacher.pt
    python train.py --arch darts --dataset digits --split final --width 8 --layers 5 --epochs 20 \\
        --save runs/teacher_digits.pt                  # offline: the quick start's teacher, seconds

Prints one line per epoch (loss, train and validation accuracy, images/s, elapsed, ETA) and then one
JSON summary line. Read top to bottom: the protocol -> one epoch and the scores -> fit, the epoch loop
-> f_KD -> the command line. The training step itself (eager, or captured once as a CUDA graph) is in
step.py, data loading and augmentation in data.py, the teacher's lessons computed once in
teachers/lessons.py.
"""
import dataclasses
import json
import math
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import common
import generator
import teachers
from data import DATASETS, batches, load_data
from kd_loss import SPACE as KD_SPACE, check_kd_params
from machinery import schema
from step import DEVICE_RNG, SGD, KDStep, learning_rate, precision, set_lr

TAU, ALPHA = 4.0, 0.9  # the usual KD setting (paper Sec. 3.1) when no searched value is given


def knob(default, kind, text):
    """A Protocol field with its command-line flag: kind parses it (a tuple: the choices), text is
    its help; add_protocol_flags makes the flags."""
    return field(default=default, metadata={"kind": kind, "help": text})


@dataclass(frozen=True)
class Protocol:
    """How a network is trained. The defaults are DARTS's (Liu et al. 2019), which the paper's
    retraining and teachers follow; search.SEARCH_PROTOCOL holds the search phase's (Ru et al. 2020)."""
    epochs: int = knob(600, common.positive_int, "training epochs (final training; search budgets: 30/60/120)")
    batch_size: int = knob(96, common.positive_int, "batch size")
    lr: float = knob(0.025, common.positive_float, "peak SGD learning rate at batch 96, scaled linearly with "
                                                   "--batch-size, cosine to 0")
    momentum: float = knob(0.9, common.nonnegative_float, "SGD momentum (Nesterov off)")
    weight_decay: float = knob(3e-4, common.nonnegative_float, "weight decay")
    grad_clip: float = knob(5.0, common.positive_float, "maximum global gradient norm")
    aux_weight: float = knob(0.4, common.nonnegative_float, "weight of an auxiliary head's cross-entropy, for "
                                                            "models that have one (the DARTS teacher)")
    cutout: int = knob(None, common.nonnegative_int, "cutout side in px (default: the data set's in final runs, "
                                                     "16 for CIFAR; 0 in search)")
    eval_every: int = knob(1, common.positive_int, "score every N epochs and after the last")
    bn_batches: int = knob(20, common.nonnegative_int, "training batches that re-estimate BatchNorm statistics "
                                                       "before each score (0: off)")
    amp: str = knob("auto", ("auto", "bf16", "fp16", "off"), "mixed precision; auto: bf16 autocast on CUDA (fp16 "
                                                            "with a GradScaler without bf16), off on the CPU")
    channels_last: str = knob("auto", ("auto", "on", "off"), "channels_last memory format; auto: on for CUDA")
    capture: str = knob("auto", ("auto", "off"), "auto: record the training step once as a CUDA graph and replay "
                                                 "it (CUDA only); off: eager")

    def replace(self, **changes):
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


# Settings a resumed run must share with its checkpoint; the others (device, capture, ...) may change.
RESUME_KEYS = ("arch", "arch_options", "dataset", "split", "train_size", "num_classes", "epochs",
               "batch_size", "lr", "momentum", "weight_decay", "grad_clip", "aux_weight", "tau",
               "alpha", "seed", "cutout", "amp", "bn_batches")


# ----------------------------------------------------------------------------------------------------
# One epoch, BatchNorm statistics, scoring

def train_epoch(run, gen):
    """One pass over the training images with L_KD. Returns (mean loss, accuracy, images seen); the
    host waits once, at the end."""
    run.model.train()
    loss_sum = torch.zeros((), device=run.data.device)
    correct = torch.zeros((), device=run.data.device, dtype=torch.int64)
    seen = 0
    for x, y, views in batches(run.data, run.data.train, run.protocol.batch_size, train=True, gen=gen,
                               cutout_size=run.cutout, workers=run.workers, memory_format=run.memory_format):
        lesson = run.lessons(views) if run.lessons is not None else None   # (B, K) looked up, or live
        loss, logits = run.step(x, y, lesson)
        loss_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    return loss_sum.item() / seen, correct.item() / seen, seen


def recalibrate_bn(model, data, n_batches, batch_size, autocast, memory_format, workers=2):
    """Interpretation (BatchNorm at short budgets): before a score, every BatchNorm's running mean and
    variance are recomputed as plain averages over the first `n_batches` training batches (no
    augmentation), as torch.optim.swa_utils.update_bn does over a whole loader. After one epoch the
    running averages still lag the weights, and a 1-epoch student scores near chance in eval mode;
    at 30-120 epochs this changes little. Training never reads these statistics."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or n_batches == 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad(), autocast, DEVICE_RNG.hold():  # dropout draws from the device's generator
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


# ----------------------------------------------------------------------------------------------------
# fit: the epoch loop

@dataclass
class Run:
    """The resolved pieces of one training run, which fit's loop and its helpers share."""
    model: nn.Module
    data: object
    protocol: Protocol
    device: torch.device
    step: KDStep
    optimizer: SGD
    scaler: torch.amp.GradScaler
    autocast: object
    memory_format: torch.memory_format
    cutout: int
    lessons: object        # a teachers.lessons.Lessons table, or None
    peak: float            # the peak learning rate at this batch size
    workers: int           # DataLoader workers (224 px data sets)
    cfg: dict              # every setting, kept in checkpoints and results


def fit(model, data, protocol=Protocol(), teacher=None, tau=TAU, alpha=0.0, *, device="cpu", seed=0,
        save=None, resume=False, stop_after=None, config=None, workers=2, own_rng=True, log=print):
    """Train `model` on `data` (data.load_data) under `protocol` with L_KD (Eq. 2) at temperature
    `tau` and weight `alpha` from `teacher`: a network (its lessons computed live) or a
    teachers.lessons.Lessons (looked up); alpha = 0 is cross-entropy with no teacher at all. Then
    score it on data.eval: the hold-out in search mode, the test set in final mode.

    Returns {"accuracy", "loss", "wall_s", "images_per_s", "epochs", "failed", "error", "history",
    "config"}. A non-finite loss ends the run with failed=True and accuracy None, so that a search
    goes on. save: a checkpoint written after every epoch; resume: continue it (same settings);
    stop_after: stop after that epoch (the schedule still spans protocol.epochs). own_rng: seed the
    global torch RNG (dropout, drop path) from `seed` here and restore it on return; False where
    several runs share a process (they then share its stream)."""
    run = setup(model, data, protocol, teacher, tau, alpha, torch.device(device), seed, config, workers)
    end = protocol.epochs if stop_after is None else min(protocol.epochs, stop_after)
    drop_path_max = getattr(model, "drop_path_prob", None)
    cuda = [run.device] if run.device.type == "cuda" and own_rng else []
    with torch.random.fork_rng(devices=cuda, enabled=own_rng):
        if own_rng:
            torch.manual_seed(seed)  # dropout and drop path draw from here
        gen = data.generator(seed)  # the data order and the augmentation draw from here
        history, clock, start = [], {"wall_s": 0.0, "train_s": 0.0, "images": 0}, 0
        if save is not None and Path(save).exists():
            if not resume:
                raise common.UserError(f"{save} already exists; pass --resume to continue it or delete it")
            history, clock, start = restore(save, run, gen, log)
        set_lr(run.optimizer, cosine(run.peak, start, protocol.epochs))
        session_start, failed = time.perf_counter(), None
        for epoch in range(start, end):
            t0 = time.perf_counter()
            if drop_path_max is not None:  # DARTS's linear ramp from 0 to the model's maximum
                model.drop_path_prob = drop_path_max * epoch / protocol.epochs
            loss, accuracy, seen = train_epoch(run, gen)  # Alg. 1 line 7: one epoch of L_KD
            set_lr(run.optimizer, cosine(run.peak, epoch + 1, protocol.epochs))  # the cosine, per epoch
            train_s = time.perf_counter() - t0
            if not math.isfinite(loss):  # a diverged student fails its evaluation; a search goes on
                failed = f"the training loss became {loss} in epoch {epoch + 1}; lower --lr or try another configuration"
                break
            row = {"epoch": epoch + 1, "loss": loss, "train_accuracy": accuracy,
                   "lr": float(run.optimizer.param_groups[0]["lr"]), "images_per_s": seen / train_s}
            if (epoch + 1) % protocol.eval_every == 0 or epoch + 1 == end:
                row["accuracy"], row["eval_loss"] = score_run(run)  # the hold-out (search) or test (final)
            clock = {"wall_s": clock["wall_s"] + time.perf_counter() - t0,
                     "train_s": clock["train_s"] + train_s, "images": clock["images"] + seen}
            row["elapsed_s"] = clock["wall_s"]
            history.append(row)
            eta = (time.perf_counter() - session_start) / (epoch + 1 - start) * (protocol.epochs - epoch - 1)
            log(progress_line(row, protocol.epochs, data.split, eta))
            if save is not None:
                checkpoint(save, run, epoch + 1, history, clock, gen)
    return summary(run, history, clock, failed)


def setup(model, data, protocol, teacher, tau, alpha, device, seed, config, workers):
    """Resolve a run: precision and memory format for the device, the teacher (live network or
    looked-up lessons; none at alpha = 0), the optimiser and the step, and every setting in `cfg`."""
    check_kd_params(tau, alpha)
    if alpha > 0 and teacher is None:
        raise common.UserError(f"KD weight alpha = {alpha} needs a teacher; give one or set alpha = 0")
    amp, autocast, memory_format = precision(protocol, device)
    cutout = (data.preset.cutout if data.split == "final" else 0) if protocol.cutout is None else protocol.cutout
    capture = device.type == "cuda" and protocol.capture != "off" and amp != "fp16"  # GradScaler syncs
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    model.to(device, memory_format=memory_format)
    teacher = teacher if alpha > 0 else None
    live = teacher if isinstance(teacher, nn.Module) else None
    if live is not None:
        # channels_last on every device: the DARTS teacher's separable convolutions run twice as
        # fast in NHWC on the CPU too (bench/train_speed.py), unlike the NAGO students
        live.to(device, memory_format=torch.channels_last).eval()
    cfg = {**(config or {}), **dataclasses.asdict(protocol), "dataset": data.name, "split": data.split,
           "train_size": len(data.train), "num_classes": data.num_classes, "image_size": data.image_size,
           "drop_path_prob": getattr(model, "drop_path_prob", None), "tau": tau, "alpha": alpha, "seed": seed,
           "amp": amp, "channels_last": memory_format == torch.channels_last, "cutout": cutout,
           "capture": capture, "lessons": None if teacher is None else "live" if live is not None else "cached",
           "device": str(device)}
    peak = protocol.lr * protocol.batch_size / Protocol.batch_size
    optimizer = SGD(model.parameters(), learning_rate(peak, device, capture), protocol.momentum, protocol.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    step = KDStep(model, optimizer, scaler, autocast, protocol, tau, alpha, live, capture)
    return Run(model, data, protocol, device, step, optimizer, scaler, autocast, memory_format, cutout,
               teacher if live is None else None, peak, workers, cfg)


def score_run(run):
    """BatchNorm statistics re-estimated, then (accuracy, loss) on data.eval."""
    recalibrate_bn(run.model, run.data, run.protocol.bn_batches, run.protocol.batch_size, run.autocast,
                   run.memory_format, run.workers)
    return score(run.model, run.data, run.data.eval, 4 * run.protocol.batch_size, run.autocast,
                 run.memory_format, run.workers)


def summary(run, history, clock, failed):
    """fit's result: the last score (scored now if a resumed run had just ended), times, settings."""
    capture = run.cfg["capture"]
    run.cfg["capture"] = run.step.graph is not None if capture and history else capture  # what really ran
    run.cfg["capture_error"] = run.step.failure
    last = history[-1] if history else {}
    if failed is None and history and "accuracy" not in last:
        last["accuracy"], last["eval_loss"] = score(run.model, run.data, run.data.eval, 4 * run.protocol.batch_size,
                                                    run.autocast, run.memory_format, run.workers)
    return {"accuracy": None if failed else last.get("accuracy"),
            "eval_split": "val" if run.data.split == "search" else "test",
            "eval_loss": None if failed else last.get("eval_loss"),
            "loss": last.get("loss"), "train_accuracy": last.get("train_accuracy"), "wall_s": clock["wall_s"],
            "images_per_s": clock["images"] / clock["train_s"] if clock["train_s"] else None,
            "epochs": len(history), "failed": failed is not None, "error": failed, "history": history,
            "config": run.cfg}


def cosine(peak, epoch, epochs):
    """SGDR's cosine without restarts (DARTS's schedule): the learning rate of epoch `epoch`."""
    return peak * (1 + math.cos(math.pi * epoch / epochs)) / 2


def checkpoint(path, run, epoch, history, clock, gen):
    """Everything a run needs to continue exactly: model, optimiser, scaler, RNG states (the learning
    rate follows from the epoch)."""
    cuda = run.device.type == "cuda"
    common.save_checkpoint(path, {
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "epoch": epoch, "history": history, "clock": clock,
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(run.device) if cuda else None,
                "data": gen.get_state()},
        "versions": common.versions(), "config": run.cfg})


def restore(path, run, gen, log):
    """Load a checkpoint written by `checkpoint` into the run; returns (history, clock, epoch)."""
    # on the CPU: RNG states must be CPU tensors
    state = schema.check("resumable checkpoint", load_checkpoint(path), path)
    common.check_resume(state["config"], run.cfg, RESUME_KEYS, path, "resume with the same settings, or start a "
                        "new file", error=common.CheckpointError)
    try:
        run.model.load_state_dict(state["model"])
    except RuntimeError:
        raise common.CheckpointError(f"{path} holds another architecture than the model given; resume "
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
    log(f"resumed {path} at epoch {state['epoch']}/{run.cfg['epochs']}")
    return state["history"], state["clock"], state["epoch"]


def load_checkpoint(path):
    """A train.py checkpoint (model, epoch, config), or a CheckpointError naming the file."""
    return schema.check("checkpoint", common.load_checkpoint(path), path)


def progress_line(row, epochs, split, eta_s):
    score_text = (f"  {'val' if split == 'search' else 'test'} {row['accuracy']:6.2%}"
                  if "accuracy" in row else "")
    return (f"epoch {row['epoch']:4d}/{epochs}  loss {row['loss']:.4f}  "
            f"train {row['train_accuracy']:6.2%}{score_text}  {row['images_per_s']:7.0f} img/s  "
            f"elapsed {common.hms(row['elapsed_s'])}  eta {common.hms(eta_s)}")


# ----------------------------------------------------------------------------------------------------
# f_KD(θ, b): one student of G(θ), trained and scored

def check_config(config, what="θ"):
    """The one checker of a configuration for every entry point: θ (generator.SPACE) and, optional,
    τ and α (kd_loss.SPACE); one sentence naming the key (and `what` holds it) when anything is wrong."""
    return common.check_config(config, {**generator.SPACE, **KD_SPACE}, optional=tuple(KD_SPACE), what=what)


BUILD_LOCK = threading.Lock()  # seeding the initial weights touches the global RNG


def f_kd(config, budget, seed, data, teacher, protocol, *, device, run=0, max_params=None, save=None,
         own_rng=True, log=None):
    """Alg. 1 line 7, f_KD(θ, b): sample the student of (θ, seed) from G(θ), train it for b epochs
    with L_KD from `teacher` (τ and α from config; no teacher or α = 0: cross-entropy), and score it
    on data.eval. Returns (fit's result, the architecture, the trained model). search.py calls it
    with the search budgets, retrain.py with the final protocol. `run` 0 seeds the initial weights
    and the data order with `seed` too; run r > 0 trains the same architecture from other ones
    (Table 1 averages 5 runs per architecture)."""
    config = check_config(config)
    tau, alpha = (config.get("tau", TAU), config.get("alpha", ALPHA)) if teacher is not None else (TAU, 0.0)
    theta = {k: config[k] for k in generator.SPACE}
    arch = generator.sample(theta, seed, data.image_size, data.num_classes, max_params)
    train_seed = seed if run == 0 else generator.derived_seed(seed, run)
    with BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_seed)
        model = generator.build(arch)
    result = fit(model, data, protocol.replace(epochs=int(round(budget))), teacher, tau, alpha,
                 device=device, seed=train_seed, save=save, resume=save is not None, own_rng=own_rng,
                 config={"arch": "nago", "arch_options": {"arch": arch}}, log=log or (lambda line: None))
    return result, arch, model


# ----------------------------------------------------------------------------------------------------
# Command line

def build_model(args, data):
    """The network to train, its description for the checkpoint, and the θ file's τ and α."""
    if args.arch is not None and args.max_params is not None:
        raise common.UserError("--max-params limits a --theta student; a teacher's size is set by its "
                               "architecture, so drop it")
    if args.theta is None:
        model, description = teachers.from_flags(args, data.num_classes)
        return model, description, {}
    for flag in ("width", "layers", "drop_path_prob", "no_auxiliary", "weights", "from_scratch"):
        if getattr(args, flag) not in (None, False):
            raise common.UserError(f"--{flag.replace('_', '-')} applies to a teacher (--arch), not a --theta "
                                   f"student; drop it")
    config = schema.read_json(args.theta, "θ", "--theta")  # a bare θ, or a best.json
    config = check_config(config.get("config", config), what=f"{common.json_where(args.theta, '--theta')}: θ")
    arch = generator.sample({k: config[k] for k in generator.SPACE}, args.seed, data.image_size,
                            data.num_classes, args.max_params)
    return generator.build(arch), {"arch": "nago", "arch_options": {"arch": arch}}, config


def add_protocol_flags(p, names=None):
    """Protocol's flags (all, or `names`), their defaults Protocol's; search.py and retrain.py take some."""
    for f in dataclasses.fields(Protocol):
        if names is None or f.name in names:
            kind, text = f.metadata["kind"], f.metadata["help"]
            options = {"choices": kind} if isinstance(kind, tuple) else {"type": kind}
            p.add_argument("--" + f.name.replace("_", "-"), default=f.default, help=text, **options)


def parser():
    p = common.Parser(description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--theta", help="θ as a JSON file or inline JSON (a best.json from search.py works too)")
    what.add_argument("--arch", choices=("darts", "inception_resnet_v2"), help="a teacher network")
    p.add_argument("--seed", type=int, default=0, help="seeds the architecture, the weights, the data order")
    p.add_argument("--dataset", default="cifar10", choices=DATASETS, help="data set")
    p.add_argument("--data-dir", default=None, help="data folder (default data/<dataset>); layouts in data.py")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR")
    p.add_argument("--cache-dir", default=None, help="cache of decoded image folders (default ~/.cache/autokd)")
    p.add_argument("--split", default="search", choices=("search", "final"),
                   help="search: score on a hold-out of the training set; final: train on all, score on test")
    p.add_argument("--val-size", type=common.positive_int, default=None,
                   help="hold-out size in search mode (default: 5,000 for CIFAR, see data.PRESETS)")
    p.add_argument("--teacher", default=None, help="teacher checkpoint for KD (teachers.load)")
    p.add_argument("--tau", type=float, default=None, help=f"KD temperature in [1, 10] (default: the θ file's, "
                                                           f"else {TAU})")
    p.add_argument("--alpha", type=float, default=None, help=f"KD weight in [0, 1] (default: the θ file's, else "
                                                             f"{ALPHA} with --teacher, 0 without)")
    p.add_argument("--max-params", type=common.positive_int, default=None,
                   help="student parameter limit, e.g. 4e6 (default: generator's, 4.0 M / 6.0 M)")
    teachers.add_flags(p)
    add_protocol_flags(p)
    p.add_argument("--device", type=common.device_name, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device")
    p.add_argument("--workers", type=common.nonnegative_int, default=2, help="DataLoader workers (224 px data sets)")
    p.add_argument("--save", default=None, help="checkpoint written after every epoch")
    p.add_argument("--resume", action="store_true", help="continue from --save if it exists (same flags)")
    p.add_argument("--stop-after", type=common.positive_int, default=None,
                   help="stop after this epoch, e.g. to split a run across jobs; the schedule still spans --epochs")
    return p


@common.cli
def main(argv=None):
    args = parser().parse_args(argv)
    if args.resume and args.save is None:
        raise common.UserError("--resume continues the --save checkpoint; give --save too")
    if args.save is not None:
        if Path(args.save).exists() and not args.resume:
            raise common.UserError(f"{args.save} already exists; pass --resume to continue it or delete it")
        common.check_writable(args.save, "--save")
    data = load_data(args.dataset, args.data_dir, args.split, args.download, args.device,
                     val_size=args.val_size, cache_dir=args.cache_dir)
    torch.manual_seed(args.seed)  # the model's initial weights
    model, config, theta = build_model(args, data)
    tau = args.tau if args.tau is not None else theta.get("tau", TAU)
    alpha = args.alpha if args.alpha is not None else theta.get("alpha", ALPHA if args.teacher is not None else 0.0)
    check_kd_params(tau, alpha)
    teacher = None
    if alpha > 0:
        if args.teacher is None:
            raise common.UserError(f"KD weight alpha = {alpha} needs --teacher (or pass --alpha 0)")
        teacher = teachers.load(args.teacher, args.dataset, data.num_classes, args.device)
    config.update(teacher=args.teacher, data_dir=args.data_dir, val_size=args.val_size)
    protocol = Protocol(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Protocol)})
    result = fit(model, data, protocol, teacher, tau, alpha, device=args.device, seed=args.seed,
                 save=args.save, resume=args.resume, stop_after=args.stop_after, config=config,
                 workers=args.workers)
    summary = {k: v for k, v in result.items() if k != "history"}
    summary["profile"] = generator.profile(model, data.image_size, args.device)
    print(json.dumps(summary))
    if result["failed"]:
        raise common.UserError(f"run failed: {result['error']}")


if __name__ == "__main__":
    sys.exit(main())
