"""Train one network with the KD loss: AutoKD's evaluation function f_KD(θ, b) (paper Alg. 1 line 7:
sample a student from G(θ), train it b epochs with L_KD of Eq. 1-2, return validation accuracy), the
600-epoch retraining of the found students (Sec. 4, Table 1), and the teachers' own training.

    python train.py --theta theta.json --seed 0 --dataset cifar10 --epochs 30 --teacher teacher.pt
    python train.py --arch darts --dataset cifar10 --split final --epochs 600 --save teacher.pt
    python train.py --arch darts --dataset digits --split final --width 8 --layers 5 --epochs 20 \
        --save runs/teacher_digits.pt                       # offline: the digits teacher, ~25 s on 2 cores

Prints one line per epoch (loss, train and validation accuracy, images/s, elapsed, ETA) and then one
JSON summary line. One loop serves students and teachers: DARTS's protocol (SGD momentum 0.9, lr
0.025 at batch 96 with cosine decay to 0, weight decay 3e-4, gradient clipping 5), an auxiliary
head and a drop-path ramp when the model has them, AMP (bf16 where supported, fp16 with a GradScaler
otherwise) and channels_last on CUDA. Data loading and augmentation live in data.py.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from data import DATASETS, batches, load_data
from kd_loss import check_kd_params, kd_loss

# DARTS's training protocol, which the paper's retraining follows (Sec. 4: "as in Ru et al., 2020").
EPOCHS = 600          # final training; the search uses budgets of 30 / 60 / 120 epochs
BATCH_SIZE = 96
LR = 0.025            # peak learning rate at BATCH_SIZE; other batch sizes scale it linearly
MOMENTUM = 0.9        # SGD, Nesterov off
WEIGHT_DECAY = 3e-4
GRAD_CLIP = 5.0       # maximum global gradient norm
AUX_WEIGHT = 0.4      # weight of an auxiliary head's cross-entropy (the DARTS teacher has one)
TAU, ALPHA = 4.0, 0.9  # the usual KD setting (paper Sec. 3.1) when no searched value is given
# Flags a resumed run must share with its checkpoint; the others (device, workers, ...) may change.
RESUME_KEYS = ("arch", "arch_options", "dataset", "split", "train_size", "num_classes", "epochs",
               "batch_size", "lr", "momentum", "weight_decay", "grad_clip", "aux_weight", "tau",
               "alpha", "seed", "cutout", "amp")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the fix."""


# ----------------------------------------------------------------------------------------------------
# Checkpoints: written atomically, read with weights_only=True

def save_checkpoint(path, state):
    """Write `state` to `path` atomically: a temporary file in the same folder, then os.replace, so
    that a run killed mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint written by save_checkpoint (tensors and plain Python only: weights_only)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises pickle, zip, EOF and runtime errors for damaged files
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}); it is "
                              f"damaged or not from train.py: delete it or give another") from None
    if not isinstance(state, dict) or not {"model", "epoch", "config"} <= state.keys():
        raise CheckpointError(f"{path} is not a train.py checkpoint (no model/epoch/config); "
                              f"give a file written by train.py --save")
    return state


def versions():
    """Provenance stored with every checkpoint: package versions and the code's git commit."""
    try:
        commit = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
    except OSError:
        commit = None
    return {"torch": str(torch.__version__), "python": sys.version.split()[0], "autokd": commit}


# ----------------------------------------------------------------------------------------------------
# The training loop

def resolve_amp(amp, device):
    """'auto': bf16 on a CUDA device that supports it, fp16 (with a GradScaler) on one that does not,
    none on the CPU. Returns (name, autocast dtype or None)."""
    if amp == "auto":
        amp = "off" if device.type != "cuda" else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp not in ("off", "bf16", "fp16"):
        raise ValueError(f"--amp must be auto, bf16, fp16 or off, not {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("fp16 AMP needs a CUDA device; use --amp bf16 or --amp off on the CPU")
    return amp, {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def evaluate(model, data, part, batch_size, autocast, memory_format, workers=2):
    """Accuracy and mean cross-entropy of `model` on `part` (no augmentation)."""
    model.eval()
    correct = torch.zeros((), device=data.device, dtype=torch.int64)
    loss = torch.zeros((), device=data.device)
    with torch.inference_mode(), autocast:
        for x, y in batches(data, part, batch_size, train=False, workers=workers,
                            memory_format=memory_format):
            logits = model(x).float()                                  # (B, K)
            loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    return correct.item() / len(part), loss.item() / len(part)


def train_epoch(model, teacher, data, batch_size, optimizer, scaler, autocast, gen, *, tau, alpha,
                aux_weight, grad_clip, cutout, workers, memory_format):
    """One pass over data.train with L_KD (Eq. 2); teacher None means alpha = 0 (no teacher forward).
    Returns (mean training loss, training accuracy, images seen); the host waits once, at the end."""
    model.train()
    loss_sum = torch.zeros((), device=data.device)
    correct = torch.zeros((), device=data.device, dtype=torch.int64)
    seen = 0
    for x, y in batches(data, data.train, batch_size, train=True, gen=gen, cutout_size=cutout,
                        workers=workers, memory_format=memory_format):
        t_logits = None
        if teacher is not None:
            with torch.inference_mode(), autocast:
                t_logits = teacher(x)                                  # (B, K)
            t_logits = t_logits.clone()  # an ordinary tensor, so that autograd may save it
        with autocast:
            out = model(x)
            logits, aux = out if isinstance(out, tuple) else (out, None)  # (B, K) each
            loss = kd_loss(logits, t_logits, y, tau, alpha)
            if aux is not None:
                # Interpretation: the auxiliary head learns from the labels only, as in DARTS.
                loss = loss + aux_weight * F.cross_entropy(aux.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients (a no-op without fp16)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss.detach() * len(y)  # on the device: no host sync per step
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
    return loss_sum.item() / seen, correct.item() / seen, seen


def fit(model, data, epochs, teacher=None, tau=TAU, alpha=0.0, device="cpu", seed=0, *,
        batch_size=BATCH_SIZE, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
        grad_clip=GRAD_CLIP, aux_weight=AUX_WEIGHT, amp="auto", channels_last="auto", cutout=None,
        eval_every=1, workers=2, save=None, resume=False, stop_after=None, config=None, log=print):
    """Train `model` on `data` (from data.load_data) for `epochs` with the KD loss of Eq. 2 from
    `teacher` at temperature `tau` and weight `alpha` (alpha = 0: cross-entropy, teacher unused),
    then score it on data.eval (the hold-out in search mode, the test set in final mode).

    Returns {"accuracy", "loss", "wall_s", "images_per_s", "epochs", "failed", "error", ...}. A
    non-finite loss ends the run with failed=True and accuracy=None instead of raising, so that a
    search can go on. save: checkpoint path written after every epoch; resume: continue from it if it
    exists (same settings); stop_after: stop after that epoch (the schedule still spans `epochs`).
    `config` (the architecture and its options) is stored in the checkpoint with every setting here.
    The global torch RNG (dropout, drop path) is seeded from `seed` inside and restored on return.
    """
    device = torch.device(device)
    check_kd_params(tau, alpha)
    if alpha > 0 and teacher is None:
        raise ValueError(f"KD weight alpha = {alpha} needs a teacher; give one or set alpha = 0")
    amp, amp_dtype = resolve_amp(amp, device)
    if channels_last == "auto":
        channels_last = device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    cutout = (data.preset.cutout if data.split == "final" else 0) if cutout is None else cutout
    end = epochs if stop_after is None else min(epochs, stop_after)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels

    model.to(device, memory_format=memory_format)
    teacher = teacher if alpha > 0 else None  # alpha = 0: no teacher forward at all
    if teacher is not None:
        # channels_last on every device: the DARTS teacher's depthwise-separable convolutions run
        # twice as fast in NHWC on the CPU too (bench/train_speed.py), unlike the NAGO students.
        teacher.to(device, memory_format=torch.channels_last).eval()
    drop_path_max = getattr(model, "drop_path_prob", None)
    cfg = {**(config or {}), "dataset": data.name, "split": data.split,
           "train_size": len(data.train), "num_classes": data.num_classes,
           "image_size": data.image_size, "epochs": epochs, "batch_size": batch_size, "lr": lr,
           "momentum": momentum, "weight_decay": weight_decay, "grad_clip": grad_clip,
           "aux_weight": aux_weight, "drop_path_prob": drop_path_max, "tau": tau, "alpha": alpha,
           "seed": seed, "amp": amp, "channels_last": channels_last, "cutout": cutout,
           "device": str(device)}
    optimizer = torch.optim.SGD(model.parameters(), lr=lr * batch_size / BATCH_SIZE,
                                momentum=momentum, weight_decay=weight_decay, nesterov=False)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0.0)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else nullcontext())
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    provenance = versions()

    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        gen = data.generator(seed)
        history, clock, start = [], {"wall_s": 0.0, "train_s": 0.0, "images": 0}, 0
        if save is not None and Path(save).exists():
            if not resume:
                raise ValueError(f"{save} already exists; pass --resume to continue it or delete it")
            state = load_checkpoint(save)  # on the CPU: RNG states must be CPU tensors
            for key in RESUME_KEYS:
                if state["config"].get(key) != cfg.get(key):
                    raise CheckpointError(
                        f"{save} was trained with {key} = {state['config'].get(key)!r}, not "
                        f"{cfg.get(key)!r}; resume with the same settings or start a new file")
            try:
                model.load_state_dict(state["model"])
            except RuntimeError:
                raise CheckpointError(f"{save} holds another architecture than the model given; "
                                      f"resume with the same --theta/--arch and seed") from None
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state["scaler"] is not None:
                scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"]["torch"])
            if cuda_devices and state["rng"]["cuda"] is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
            gen.set_state(state["rng"]["data"])
            history, clock, start = state["history"], state["clock"], state["epoch"]
            log(f"resumed {save} at epoch {start}/{epochs}")

        session_start, failed = time.perf_counter(), None
        for epoch in range(start, end):
            t0 = time.perf_counter()
            if drop_path_max is not None:  # DARTS's linear ramp from 0 to the model's maximum
                model.drop_path_prob = drop_path_max * epoch / epochs
            train_loss, train_acc, seen = train_epoch(
                model, teacher, data, batch_size, optimizer, scaler,
                autocast, gen, tau=tau, alpha=alpha, aux_weight=aux_weight, grad_clip=grad_clip,
                cutout=cutout, workers=workers, memory_format=memory_format)
            scheduler.step()
            train_s = time.perf_counter() - t0
            if not math.isfinite(train_loss):
                failed = (f"the training loss became {train_loss} in epoch {epoch + 1}; lower --lr "
                          f"or try another configuration")
                break
            row = {"epoch": epoch + 1, "loss": train_loss, "train_accuracy": train_acc,
                   "lr": optimizer.param_groups[0]["lr"], "images_per_s": seen / train_s}
            if (epoch + 1) % eval_every == 0 or epoch + 1 == end:
                row["accuracy"], row["eval_loss"] = evaluate(model, data, data.eval, 4 * batch_size,
                                                             autocast, memory_format, workers)
            clock = {"wall_s": clock["wall_s"] + time.perf_counter() - t0,
                     "train_s": clock["train_s"] + train_s, "images": clock["images"] + seen}
            row["elapsed_s"] = clock["wall_s"]
            history.append(row)
            log(progress_line(row, epochs, data.split, (time.perf_counter() - session_start)
                              / (epoch + 1 - start) * (epochs - epoch - 1)))
            if save is not None:
                save_checkpoint(save, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                    "epoch": epoch + 1, "history": history, "clock": clock,
                    "rng": {"torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state(device) if cuda_devices else None,
                            "data": gen.get_state()},
                    "versions": provenance, "config": cfg})

    last = history[-1] if history else {}
    if failed is None and history and "accuracy" not in last:  # a resumed run that had just ended
        last["accuracy"], last["eval_loss"] = evaluate(model, data, data.eval, 4 * batch_size,
                                                       autocast, memory_format, workers)
    return {"accuracy": None if failed else last.get("accuracy"),
            "eval_split": "val" if data.split == "search" else "test",
            "eval_loss": None if failed else last.get("eval_loss"),
            "loss": last.get("loss"), "train_accuracy": last.get("train_accuracy"),
            "wall_s": clock["wall_s"],
            "images_per_s": clock["images"] / clock["train_s"] if clock["train_s"] else None,
            "epochs": len(history), "failed": failed is not None, "error": failed,
            "history": history, "config": cfg}


def hms(seconds):
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def progress_line(row, epochs, split, eta_s):
    score = (f"  {'val' if split == 'search' else 'test'} {row['accuracy']:6.2%}"
             if "accuracy" in row else "")
    return (f"epoch {row['epoch']:4d}/{epochs}  loss {row['loss']:.4f}  "
            f"train {row['train_accuracy']:6.2%}{score}  {row['images_per_s']:7.0f} img/s  "
            f"elapsed {hms(row['elapsed_s'])}  eta {hms(eta_s)}")


# ----------------------------------------------------------------------------------------------------
# Command line

def read_theta(path):
    """θ (and optionally tau, alpha) from a JSON object, flat or under "config" (search output)."""
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"θ file {path} not found; check the --theta path") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"θ file {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    obj = obj.get("config", obj) if isinstance(obj, dict) else obj
    if not isinstance(obj, dict):
        raise ValueError(f"θ file {path} must hold a JSON object of generator hyperparameters")
    return obj


def build_model(args, data):
    """The network to train and its description for the checkpoint ("arch", "arch_options")."""
    darts_flags = {k: getattr(args, k) for k in ("width", "layers", "drop_path_prob")
                   if getattr(args, k) is not None}
    if args.no_auxiliary:
        darts_flags["auxiliary"] = False
    if args.arch != "darts" and darts_flags:
        raise ValueError(f"--{'/--'.join(k.replace('_', '-') for k in darts_flags)} apply to "
                         f"--arch darts only; drop them")
    if args.pretrained and args.arch != "inception_resnet_v2":
        raise ValueError("--pretrained applies to --arch inception_resnet_v2 only; drop it")
    if args.arch is not None and args.max_params is not None:
        raise ValueError("--max-params limits a --theta student; a teacher's size is set by its "
                         "architecture, so drop it")
    if args.theta is not None:
        import generator
        theta = read_theta(args.theta)
        arch = generator.sample({k: theta[k] for k in generator.SPACE if k in theta}, args.seed,
                                data.image_size, data.num_classes, args.max_params)
        return generator.build(arch), {"arch": "nago", "arch_options": {"arch": arch}}, theta
    import teachers
    options = {"pretrained": True} if args.pretrained else darts_flags
    return (teachers.build(args.arch, data.num_classes, **options),
            {"arch": args.arch, "arch_options": options}, {})


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--theta", help="JSON file with generator hyperparameters θ (a student)")
    what.add_argument("--arch", choices=("darts", "inception_resnet_v2"), help="a teacher network")
    p.add_argument("--seed", type=int, default=0, help="seeds the architecture sample, the weights, "
                                                       "the data order and augmentation")
    p.add_argument("--dataset", default="cifar10", choices=DATASETS, help="data set")
    p.add_argument("--data-dir", default=None, help="data folder (default data/<dataset>; data/ for "
                                                    "digits); layouts in data.py")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR")
    p.add_argument("--cache-dir", default=None, help="cache of decoded image folders "
                                                     "(default ~/.cache/autokd)")
    p.add_argument("--split", default="search", choices=("search", "final"),
                   help="search: score on a hold-out of the training set; final: train on all of "
                        "it and score on the test set")
    p.add_argument("--val-size", type=int, default=None,
                   help="hold-out size in search mode (default: 5,000 for CIFAR, see data.PRESETS)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="training epochs (search budgets: "
                                                              "30/60/120)")
    p.add_argument("--teacher", default=None, help="teacher checkpoint for KD (teachers.load)")
    p.add_argument("--tau", type=float, default=None,
                   help=f"KD temperature in [1, 10] (default: the θ file's, else {TAU})")
    p.add_argument("--alpha", type=float, default=None,
                   help=f"KD weight in [0, 1] (default: the θ file's, else {ALPHA} with --teacher "
                        f"and 0 without)")
    p.add_argument("--max-params", type=int, default=None,
                   help="student parameter limit (default: generator's, 4.0 M / 6.0 M)")
    p.add_argument("--width", type=int, default=None, help="darts: initial channels (default 36)")
    p.add_argument("--layers", type=int, default=None, help="darts: cells (default 20)")
    p.add_argument("--drop-path-prob", type=float, default=None,
                   help="darts: final drop-path probability, ramped from 0 (default 0.2)")
    p.add_argument("--no-auxiliary", action="store_true", help="darts: no auxiliary head")
    p.add_argument("--pretrained", action="store_true",
                   help="inception_resnet_v2: start from timm's ImageNet weights (needs their download)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="batch size")
    p.add_argument("--lr", type=float, default=LR,
                   help=f"peak learning rate at batch {BATCH_SIZE}, scaled linearly with "
                        f"--batch-size, cosine-decayed to 0")
    p.add_argument("--momentum", type=float, default=MOMENTUM, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY, help="weight decay")
    p.add_argument("--grad-clip", type=float, default=GRAD_CLIP, help="max gradient norm")
    p.add_argument("--aux-weight", type=float, default=AUX_WEIGHT,
                   help="weight of the auxiliary head's loss, for models that have one")
    p.add_argument("--cutout", type=int, default=None,
                   help="cutout side in px (default: 16 for CIFAR with --split final, else 0)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                   help="mixed precision; auto: bf16 on CUDA if supported, else fp16; off on CPU")
    p.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"),
                   help="channels_last memory format; auto: on for CUDA")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="DataLoader workers (224 px data sets only)")
    p.add_argument("--eval-every", type=int, default=1, help="score every N epochs and at the end")
    p.add_argument("--save", default=None, help="checkpoint written after every epoch")
    p.add_argument("--resume", action="store_true",
                   help="continue from --save if it exists (same flags); else start fresh")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this epoch, e.g. to split a run across jobs; the learning-rate "
                        "schedule still spans --epochs")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        if args.resume and args.save is None:
            raise ValueError("--resume continues the --save checkpoint; give --save too")
        torch.manual_seed(args.seed)  # the model's initial weights
        data = load_data(args.dataset, args.data_dir, args.split, args.download, args.device,
                         val_size=args.val_size, cache_dir=args.cache_dir)
        model, config, theta = build_model(args, data)
        tau = args.tau if args.tau is not None else theta.get("tau", TAU)
        alpha = (args.alpha if args.alpha is not None else
                 theta.get("alpha", ALPHA if args.teacher is not None else 0.0))
        teacher = None
        if alpha > 0:
            if args.teacher is None:
                raise ValueError(f"KD weight alpha = {alpha} needs --teacher (or pass --alpha 0)")
            import teachers
            teacher = teachers.load(args.teacher, args.dataset, data.num_classes, args.device)
        config.update(teacher=args.teacher, data_dir=args.data_dir, val_size=args.val_size)
        result = fit(model, data, args.epochs, teacher, tau, alpha, args.device, args.seed,
                     batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                     weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                     aux_weight=args.aux_weight, amp=args.amp,
                     channels_last={"on": True, "off": False}.get(args.channels_last, "auto"),
                     cutout=args.cutout, eval_every=args.eval_every, workers=args.workers,
                     save=args.save, resume=args.resume, stop_after=args.stop_after, config=config)
        import generator
        summary = {k: v for k, v in result.items() if k != "history"}
        summary["profile"] = generator.profile(model, data.image_size, args.device)
    except (ValueError, OSError) as e:  # a user's mistake: one sentence, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    if result["failed"]:
        print(f"error: run failed: {result['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
