"""Teachers for AutoKD (paper Sec. 4): DARTS_V2 for CIFAR-10/100, Inception-ResNet-V2 for MIT67 and ImageNet.

    build(name, num_classes, **options)        a fresh network to train with train.py
    load(path, dataset, num_classes, device)   a trained teacher from a train.py checkpoint, in eval mode

A checkpoint describes itself (config["arch"], ["arch_options"], ["dataset"], ["num_classes"]), so a
teacher trained for another data set or class count is refused instead of silently distilling noise.
"""
from pathlib import Path

import torch

from machinery import cli, files, schema
from . import darts, inception_resnet_v2

BUILDERS = {"darts": darts.build, "inception_resnet_v2": inception_resnet_v2.build}

# The paper's teacher per data set (Sec. 4), used to name the fix in error messages.
PAPER_TEACHER = {"mit67": "inception_resnet_v2", "imagenet": "inception_resnet_v2"}  # others: darts


def build(name, num_classes, **options):
    """A new teacher network. darts options: width=36, layers=20, auxiliary=True, drop_path_prob=0.2;
    inception_resnet_v2 options: pretrained=False (True: timm's ImageNet weights from the hub),
    weights=None (a file holding those weights)."""
    if name not in BUILDERS:
        raise cli.UserError(f"unknown teacher {name!r}: choose one of {', '.join(BUILDERS)}")
    return BUILDERS[name](num_classes, **options)


def add_flags(p):
    """train.py's flags that shape a teacher (--arch)."""
    p.add_argument("--width", type=cli.whole(1, 4096), default=None, help="darts: initial channels (default 36)")
    p.add_argument("--layers", type=cli.whole(1, 1000), default=None, help="darts: cells (default 20)")
    p.add_argument("--drop-path-prob", type=cli.nonnegative_float, default=None,
                   help="darts: final drop-path probability, ramped from 0 (default 0.2)")
    p.add_argument("--no-auxiliary", action="store_true", help="darts: no auxiliary head")
    p.add_argument("--weights", default=None,
                   help="inception_resnet_v2: timm's ImageNet weights from this file (model.safetensors of "
                        "huggingface.co/timm/inception_resnet_v2.tf_in1k) instead of the hub")
    p.add_argument("--from-scratch", action="store_true",
                   help="inception_resnet_v2: random initial weights, not timm's ImageNet ones (the default)")


def from_flags(args, num_classes):
    """The teacher that train.py's flags describe, and its description for the checkpoint:
    --width/--layers/--drop-path-prob/--no-auxiliary for darts, --weights/--from-scratch for
    inception_resnet_v2 (ImageNet weights from the hub by default: our reading, as the paper does not
    say how its MIT67 teacher was trained; a resumed run's checkpoint holds them instead)."""
    darts_flags = {k: getattr(args, k) for k in ("width", "layers", "drop_path_prob") if getattr(args, k) is not None}
    if args.no_auxiliary:
        darts_flags["auxiliary"] = False
    if args.arch != "darts" and darts_flags:
        raise cli.UserError(f"--{'/--'.join(k.replace('_', '-') for k in darts_flags)} apply to "
                               f"--arch darts only; drop them")
    if (args.weights or args.from_scratch) and args.arch != "inception_resnet_v2":
        raise cli.UserError("--weights and --from-scratch apply to --arch inception_resnet_v2 only; drop them")
    if args.weights and args.from_scratch:
        raise cli.UserError("--weights gives the initial weights and --from-scratch refuses them; drop one")
    if args.arch == "darts":
        return build("darts", num_classes, **darts_flags), {"arch": "darts", "arch_options": darts_flags}
    options = {"weights": files.absolute(args.weights)} if args.weights else {"pretrained": not args.from_scratch}
    resumed = args.resume and Path(args.save).is_file()
    return build(args.arch, num_classes, **({} if resumed else options)), {"arch": args.arch, "arch_options": options}


def _train_hint(dataset):
    arch = PAPER_TEACHER.get(dataset, "darts")
    return (f"train a teacher with "
            f"`python train.py --arch {arch} --dataset {dataset} --split final --save ...`")


def load(path, dataset, num_classes, device="cpu"):
    """The teacher saved by train.py at `path`, on `device`, in eval mode.

    Raises a UserError, in one sentence naming the fix, when the file is missing or unreadable, holds
    no teacher, was trained for another data set or number of classes than (dataset, num_classes), or
    holds weights that are not finite (a diverged training)."""
    if not Path(path).is_file():
        raise cli.UserError(f"there is no teacher checkpoint at {path}: {_train_hint(dataset)}")
    try:
        checkpoint = files.load_checkpoint(path, map_location=device, what="train.py checkpoint")
    except files.CheckpointError:
        raise cli.UserError(f"{path} is not a readable train.py checkpoint: {_train_hint(dataset)}") from None
    config = schema.check("teacher checkpoint", checkpoint, path, fix=_train_hint(dataset))["config"]
    arch = config["arch"]
    if arch not in BUILDERS:
        raise cli.UserError(f"{path} holds a {cli.clip(repr(arch))} network, not a teacher "
                               f"({', '.join(BUILDERS)}): {_train_hint(dataset)}")
    if (config["dataset"], config["num_classes"]) != (dataset, num_classes):
        raise cli.UserError(f"{path} was trained on {cli.clip(config['dataset'])} ({config['num_classes']} "
                               f"classes), not {dataset} ({num_classes} classes): {_train_hint(dataset)}")
    options = dict(config.get("arch_options", {}))
    for key in ("pretrained", "weights"):  # the checkpoint has the weights: nothing to download or read
        options.pop(key, None)
    model = build(arch, num_classes, **options)
    state = checkpoint["model"]
    broken = [k for k, v in state.items() if torch.is_floating_point(v) and not torch.isfinite(v).all()]
    if broken:
        raise cli.UserError(f"{path} holds non-finite weights ({broken[0]} and {len(broken) - 1} more): its "
                               f"training diverged; {_train_hint(dataset)}")
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise cli.UserError(f"{path} holds weights that do not fit its own config (arch {arch!r}, options "
                               f"{cli.excerpt(options)}): the file was altered; {_train_hint(dataset)}") from None
    return model.to(device).eval()
