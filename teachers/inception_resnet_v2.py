"""The Inception-ResNet-V2 teacher for 224 px data sets (MIT67, ImageNet), built through timm.

AutoKD (Sec. 4) follows Liu et al. (2019b) and distils from Inception-ResNet-V2 (Szegedy et al.,
"Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning", AAAI 2017) on the
large-image data sets. timm is an optional dependency, imported only when this teacher is asked for.

    python train.py --arch inception_resnet_v2 --dataset mit67 --data-dir data/mit67 --split final --save teacher.pt
"""


def build(num_classes, pretrained=False):
    """Inception-ResNet-V2 with a new, randomly initialised classifier for num_classes classes.

    pretrained=True starts the rest of the network from timm's ImageNet weights (a download from the
    Hugging Face hub, for users who can reach it); with num_classes != 1000 timm replaces the classifier."""
    try:
        import timm
    except ImportError:
        raise ImportError("the inception_resnet_v2 teacher needs timm: pip install timm") from None
    return timm.create_model("inception_resnet_v2", pretrained=pretrained, num_classes=num_classes)
