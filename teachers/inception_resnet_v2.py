"""The Inception-ResNet-V2 teacher for 224 px data sets (MIT67, ImageNet; AutoKD Sec. 4), through timm
(an optional dependency, imported only here).

Interpretation: the paper does not say how its MIT67 teacher was trained. A 54 M-parameter network on
5,360 training images is normally fine-tuned from ImageNet weights, so train.py starts it from timm's
`inception_resnet_v2.tf_in1k` (trained at 299 px on inputs in [-1, 1]; here 224 px inputs with
ImageNet's mean and std, the students' own batches; fine-tuning's first BatchNorm absorbs the change):

    python train.py --arch inception_resnet_v2 --dataset mit67 --data-dir data/mit67 --split final --save teacher.pt
        --weights model.safetensors    timm's weights from a local file, where the hub cannot be reached
        --from-scratch                 random initial weights instead
"""
from pathlib import Path

from machinery import cli

NAME = "inception_resnet_v2"
WEIGHTS_PAGE = "https://huggingface.co/timm/inception_resnet_v2.tf_in1k"
FETCH_HINT = (f"download model.safetensors from {WEIGHTS_PAGE} where the hub can be reached and pass "
              f"--weights FILE, or start from random weights with --from-scratch")


def build(num_classes, pretrained=False, weights=None):
    """Inception-ResNet-V2 for num_classes classes: random weights; or, with pretrained=True, timm's
    ImageNet weights from the Hugging Face hub; or those weights read from the file `weights`. A new,
    random classifier replaces the ImageNet one unless num_classes is 1000. Raises a UserError naming
    the fix when timm is missing, the hub cannot be reached, or the file is not those weights."""
    try:
        import timm
    except ImportError:
        raise cli.UserError("the inception_resnet_v2 teacher needs timm: pip install timm") from None
    if weights is None:
        try:
            return timm.create_model(NAME, pretrained=pretrained, num_classes=num_classes)
        except OSError as error:  # huggingface_hub's errors when it is offline or unreachable
            first = cli.describe(error).split(". ")[0]
            raise cli.UserError(f"timm's ImageNet weights for {NAME} could not be fetched ({first}): "
                                   f"{FETCH_HINT}.") from None
    model = timm.create_model(NAME, num_classes=num_classes)
    load_weights(model, weights)
    return model


def load_weights(model, path):
    """Load timm's ImageNet weights for this network from the file at `path` (safetensors, or a torch
    file read with weights_only): every tensor must be there, except a classifier of another class count."""
    if not Path(path).is_file():
        raise cli.UserError(f"--weights {path}: no such file; {FETCH_HINT}.")
    from timm.models import load_state_dict
    try:
        state = load_state_dict(str(path))
    except Exception as error:  # safetensors, pickle and torch each raise their own kind
        raise cli.UserError(f"--weights {path} is not a weights file ({type(error).__name__}); "
                               f"{FETCH_HINT}.") from None
    head = model.pretrained_cfg["classifier"]
    own = model.state_dict()
    new_head = {k for k in (f"{head}.weight", f"{head}.bias") if k not in state or state[k].shape != own[k].shape}
    state = {k: v for k, v in state.items() if k not in new_head}
    wrong = sorted(k for k in own if k not in new_head and (k not in state or state[k].shape != own[k].shape))
    extra = sorted(set(state) - set(own))
    if wrong or extra:
        raise cli.UserError(f"--weights {path} does not hold {NAME}'s weights ({(wrong + extra)[0]} is missing, "
                               f"unexpected or of another shape); {FETCH_HINT}.")
    model.load_state_dict(state, strict=False)
