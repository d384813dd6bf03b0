"""Data sets for train.py (paper Sec. 4): loading, the search/final splits, and augmentation.

Small images (CIFAR-10/100, the bundled digits) live on the training device as one uint8 tensor and
are augmented there in whole batches (crop with zero padding, flip, cutout), as in airbench; each row
also says which view of which image it is, so the teacher's lessons can be looked up
(teachers/lessons.py). 224 px sets (MIT67, ImageNet) stream through a DataLoader. "search" trains on
the training set minus a seeded hold-out and scores on the hold-out; "final" trains on all of it and
scores on the test split. Every split is checked where it is read (class sets, labels, images).

    python data.py --dataset digits                  # split sizes and a batch's shape
    python data.py --dataset cifar10 --data-dir /tmp/cifar10-jpeg   # decodes once into the cache

The folder layouts --data-dir may hold: docs/stages.md, "data.py".
"""
import functools
import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import datasets, transforms
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension, make_dataset

from machinery import cli, files

REPO = Path(__file__).resolve().parent
HOLDOUT_SEED = 0   # one fixed hold-out, so every candidate of a search is scored on the same images
DIGITS_TEST = 400  # digits: a fixed, seeded 1,397 / 400 train / test split (the file has no split)


@dataclass(frozen=True)
class Preset:
    image_size: int
    num_classes: int
    val_size: int      # search-mode hold-out taken from the training set
    pad: int           # random crop with this much zero padding (small images)
    flip: bool         # random horizontal flip
    cutout: int        # cutout side in final runs (DARTS's retraining); search runs use none
    mean: tuple
    std: tuple


CIFAR10_STATS = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_STATS = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_STATS = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DIGITS_STATS = (0.3051,) * 3, (0.3186,) * 3  # of the 16 px training images (3 equal channels)
# One row per data set. Digits: 2 px padding (4 px would shift a 16 px digit by a quarter) and no
# flip (digits are not mirror-invariant). 224 px sets use RandomResizedCrop + flip in the loader.
PRESETS = {
    "cifar10": Preset(32, 10, 5000, 4, True, 16, *CIFAR10_STATS),
    "cifar100": Preset(32, 100, 5000, 4, True, 16, *CIFAR100_STATS),
    "digits": Preset(16, 10, 300, 2, False, 0, *DIGITS_STATS),
    "mit67": Preset(224, 67, 536, 0, True, 0, *IMAGENET_STATS),
    "imagenet": Preset(224, 1000, 10000, 0, True, 0, *IMAGENET_STATS),
}
DATASETS = tuple(PRESETS)


@dataclass
class TensorSplit:
    """A whole split on the training device: x (N, 3, H, W) uint8, y (N,) int64. Training splits
    also keep their padded (and mirrored) copies, about 3x x's memory (430 MB for CIFAR)."""
    x: torch.Tensor
    y: torch.Tensor
    padded: dict = field(default_factory=dict, repr=False, compare=False)  # (pad, flip) -> views

    def __len__(self):
        return len(self.y)

    def views(self, pad, flip):
        """padded_views(x, pad, flip), made on first use and kept: an epoch then costs one copy."""
        if (pad, flip) not in self.padded:
            self.padded[pad, flip] = padded_views(self.x, pad, flip)
        return self.padded[pad, flip]


@dataclass
class Data:
    """What load_data returns. train/val/test are TensorSplits (small images) or torch Datasets
    (224 px); val is None in final mode, test is None in search mode."""
    name: str
    split: str
    num_classes: int
    image_size: int
    preset: Preset
    device: torch.device
    train: object
    val: object
    test: object

    @property
    def eval(self):
        """The split a run is scored on: the hold-out when searching, the test set when final."""
        return self.val if self.split == "search" else self.test

    def materialise(self):
        """Make now the tensors that batches() would make on first use (the padded views, the
        normalisation constants): students on several CUDA streams then share finished tensors."""
        if isinstance(self.train, TensorSplit):
            self.train.views(self.preset.pad, self.preset.flip)
            stats_on(self.preset, self.device)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)

    def generator(self, seed):
        """The random stream of augmentation and shuffling, on the device the batches are made on."""
        on_device = isinstance(self.train, TensorSplit)
        return torch.Generator(self.device if on_device else "cpu").manual_seed(seed)


def default_data_dir(name):
    return REPO / "data" if name == "digits" else REPO / "data" / name


def load_data(name, data_dir=None, split="search", download=False, device="cpu", val_size=None,
              cache_dir=None):
    """Load data set `name` for a "search" run (train minus a seeded hold-out of `val_size` images,
    scored on the hold-out) or a "final" run (all of train, scored on test). Returns a Data."""
    if name not in PRESETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in ("search", "final"):
        raise ValueError(f"split must be 'search' or 'final', not {split!r}")
    if download and name not in ("cifar10", "cifar100"):
        raise ValueError(f"--download fetches CIFAR only; put {name} in its folder by hand (layouts "
                         f"in data.py)")
    preset = PRESETS[name]
    root = Path(data_dir) if data_dir is not None else default_data_dir(name)
    val_size = preset.val_size if val_size is None else val_size
    device = torch.device(device)
    read = large_image_set if preset.image_size > 64 else small_image_arrays
    train = read(name, root, "train", download, cache_dir)
    # The test split is not even read when searching.
    test = read(name, root, "test", download, cache_dir) if split == "final" else None
    n_train = len(train[1]) if isinstance(train, tuple) else len(train)
    if split == "search" and not 0 < val_size < n_train:
        raise ValueError(f"a hold-out of {val_size} images needs a training set larger than "
                         f"{n_train} images; choose a smaller --val-size")
    rest, val = np.arange(n_train), None
    if split == "search":
        perm = np.random.default_rng(HOLDOUT_SEED).permutation(n_train)
        rest, val = np.sort(perm[val_size:]), np.sort(perm[:val_size])
    if isinstance(train, tuple):  # small images: (x uint8 (N, 3, H, W), y int64 (N,)) on the CPU
        def put(x, y, idx=None):
            if idx is not None:
                x, y = x[idx], y[idx]
            return TensorSplit(x.to(device), y.to(device))
        parts = (put(*train, rest), put(*train, val) if val is not None else None,
                 put(*test) if test is not None else None)
    else:
        tf_train, tf_eval = large_transforms(preset)
        parts = (Transformed(train, rest, tf_train),
                 Transformed(train, val, tf_eval) if val is not None else None,
                 Transformed(test, np.arange(len(test)), tf_eval) if test is not None else None)
    return Data(name, split, preset.num_classes, preset.image_size, preset, device, *parts)


# ----------------------------------------------------------------------------------------------------
# Small images: read whole splits into uint8 tensors

def small_image_arrays(name, root, part, download, cache_dir):
    """Split `part` ("train" or "test") as (x uint8 (N, 3, H, W), y int64 (N,)) on the CPU."""
    if (root / "train").is_dir():
        x, y = image_folder_arrays(name, root, part, PRESETS[name].image_size, cache_dir)
    elif name == "digits":
        x, y = digits_arrays(root / "digits.csv.gz", part)
    else:
        x, y = torchvision_cifar_arrays(name, root, part, download)
    check_labels(y, name, root)
    return x, y


def digits_arrays(path, part):
    """The UCI digits (8x8, values 0..16) as 16x16 RGB uint8: bilinear upsampling (smoother strokes
    than nearest), grey copied to 3 channels, and a fixed seeded 1,397 / 400 train / test split."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; point --data-dir at the folder holding "
                                f"digits.csv.gz (the repository's data/)")
    try:
        rows = torch.from_numpy(np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2))  # (1797, 65)
    except (ValueError, EOFError, OSError) as e:  # gzip and parsing errors alike
        raise cli.UserError(f"{path} is not the UCI digits table ({type(e).__name__}); restore it "
                               f"from the repository (git checkout data/digits.csv.gz)") from None
    if rows.shape[1] != 65 or len(rows) <= DIGITS_TEST or not ((rows >= 0) & (rows <= 16)).all():
        raise cli.UserError(f"{path} is not the UCI digits table (65 integer columns of 0..16); "
                               f"restore it from the repository (git checkout data/digits.csv.gz)")
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(rows)))
    idx = (perm[DIGITS_TEST:] if part == "train" else perm[:DIGITS_TEST]).sort().values
    x = rows[idx, :64].float().view(-1, 1, 8, 8) * (255 / 16)                 # (N, 1, 8, 8)
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)  # (N, 1, 16, 16)
    x = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()  # (N, 3, 16, 16)
    return x, rows[idx, 64]


def torchvision_cifar_arrays(name, root, part, download):
    """CIFAR's original pickled batches through torchvision's own class (which checks their MD5)."""
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    if not download and not (root / cls.base_folder).is_dir():
        raise FileNotFoundError(
            f"no {name} data in {root}: expected torchvision's {root / cls.base_folder} (pass "
            f"--download to fetch it) or an image folder {root}/train/<class>/*.jpg and "
            f"{root}/test/<class>/*.jpg")
    try:
        ds = cls(str(root), train=part == "train", download=download)
    except RuntimeError as e:  # torchvision's "Dataset not found or corrupted"
        raise ValueError(f"{root / cls.base_folder} failed torchvision's check ({e}); delete it "
                         f"and run again with --download") from None
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    return x, torch.tensor(ds.targets, dtype=torch.int64)


def image_folder_arrays(name, root, part, image_size, cache_dir):
    """<root>/<part>/<class>/<image> (part: train or test; both hold the data set's classes, see
    folder_classes), decoded once with Pillow and cached as uint8 arrays. The cache key covers the
    folder's path and every file's name, class, size and mtime, so an edited folder is decoded again."""
    classes = folder_classes(name, root / "train", root / "test")
    items = [(Path(f), c) for f, c in make_dataset(root / part, {c: i for i, c in enumerate(classes)},
                                                    IMG_EXTENSIONS, allow_empty=True)]
    key = hashlib.sha1(str(root.resolve()).encode())
    for f, c in items:
        st = f.stat()
        key.update(f"{f.name}:{c}:{st.st_size}:{st.st_mtime_ns};".encode())
    cache_dir = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "autokd"
    cache = cache_dir / f"{root.name}-{part}-{image_size}px-{key.hexdigest()[:16]}.npz"
    cached = read_cache(cache, len(items), image_size)
    if cached is not None:
        return cached
    x = decode_images([f for f, _ in items], image_size)                # (N, 3, S, S)
    y = np.array([c for _, c in items], dtype=np.int64)                # (N,)
    try:
        files.write_atomic(cache, lambda f: np.savez(f, x=x, y=y))
    except files.NoSpace as e:  # a cache only saves time: the run goes on without it
        print(f"note: {e} The images stay uncached and are decoded again next time.", file=sys.stderr)
    return torch.from_numpy(x), torch.from_numpy(y)


def read_cache(path, n, image_size):
    """(x, y) from the image cache `path` if it holds `n` images of `image_size` px, else None. A
    damaged file (cut short by a full disk or a copy, edited) is said in one line and rebuilt."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            x, y = z["x"], z["y"]
    except Exception as e:  # noqa: BLE001 (numpy and zipfile raise BadZipFile, EOF, key and value errors)
        problem = type(e).__name__
    else:
        if x.dtype == np.uint8 and x.shape == (n, 3, image_size, image_size) and y.dtype == np.int64 \
                and y.shape == (n,):
            return torch.from_numpy(x), torch.from_numpy(y)
        problem = f"not the {n} images of {image_size} px it should hold"
    print(f"note: the image cache {path} is damaged ({problem}); decoding the images again to rebuild it",
          file=sys.stderr)
    return None


# ----------------------------------------------------------------------------------------------------
# Checks of what a folder holds

def folder_classes(name, train, test):
    """The sorted class names of an image folder's splits `train` and `test` (their subfolders that
    hold images), which must be exactly the data set's classes, the same in both: another count than
    the network's outputs fails in training ("Target 10 is out of bounds"), one class scores a
    meaningless 100 %, and a class in one split only is never trained or never scored."""
    for split in (train, test):
        if not split.is_dir():
            raise FileNotFoundError(f"{split} does not exist; an image folder needs both "
                                    f"{train.name}/<class>/ and {test.name}/<class>/")
    found = [sorted(d.name for d in os.scandir(split) if d.is_dir() and holds_images(d.path))
             for split in (train, test)]
    check_classes(name, *zip((train, test), found))
    return found[0]


def holds_images(folder):
    """Whether `folder` or a folder below it holds an image file (torchvision's make_dataset walks
    the same way); stops at the first one."""
    return any(has_file_allowed_extension(f, IMG_EXTENSIONS)
               for _, _, files in os.walk(folder, followlinks=True) for f in files)


def check_classes(name, train, test):
    """train, test: (where, class names) of the two splits of one folder; see folder_classes."""
    (train_where, train_classes), (test_where, test_classes) = train, test
    expected = PRESETS[name].num_classes
    n = len(train_classes)
    if n != expected:
        other = [d for d, p in PRESETS.items() if p.num_classes == n]
        raise cli.UserError(
            f"{train_where} holds {n} class{'es' * (n != 1)} with images but {name} has {expected}: give "
            f"--data-dir a folder of {name}'s {expected} classes" + (f" or use --dataset {other[0]}" if other else ""))
    only_test = sorted(set(test_classes) - set(train_classes))
    only_train = sorted(set(train_classes) - set(test_classes))
    if only_test or only_train:
        lacks = [f"{a} holds {few(extra)} that {b} lacks" for a, b, extra in
                 ((test_where, train_where, only_test), (train_where, test_where, only_train)) if extra]
        raise cli.UserError(f"{'; '.join(lacks)}: give both splits the same classes, each with images")


def few(names, at_most=5):
    """'a, b, c' or 'a, b, c, d, e and 7 more'."""
    more = f" and {len(names) - at_most} more" if len(names) > at_most else ""
    return ", ".join(names[:at_most]) + more


def check_labels(y, name, where):
    """Labels y (N,) must be classes of data set `name`, 0 to num_classes - 1."""
    expected = PRESETS[name].num_classes
    if len(y) and (y.min() < 0 or y.max() >= expected):
        raise cli.UserError(f"{where} holds labels {int(y.min())} to {int(y.max())} but the classes of {name} "
                               f"are 0 to {expected - 1}: it is not {name} data; check --dataset and --data-dir")


class UnreadableImage(cli.UserError):
    """An image file Pillow cannot decode; the message names it. One raised in a DataLoader worker is
    rebuilt in the parent from torch's report of it (the worker's traceback), whose last line is
    "data.UnreadableImage: <the message>"."""

    def __init__(self, message):
        if "\n" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


def open_image(path):
    """The image at `path` as RGB, or UnreadableImage naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as e:  # noqa: BLE001 (Pillow raises OS, syntax, value and struct errors for damaged files)
        reason = " ".join(str(e).split())[:80] or type(e).__name__
        raise UnreadableImage(f"{path} is not a readable image ({reason}); replace or delete it") from None


def decode_images(paths, image_size):
    """uint8 (N, 3, S, S); Pillow releases the GIL while decoding, so threads use every core."""

    def read(path):
        im = open_image(path)
        if im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.BILINEAR)
        return np.asarray(im)                                          # (S, S, 3)
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        x = np.stack(list(pool.map(read, paths, chunksize=256)))      # (N, S, S, 3)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))               # (N, 3, S, S)


# ----------------------------------------------------------------------------------------------------
# Small images: batched augmentation on the device

def padded_views(x, pad, flip):
    """x (N, C, H, W) zero-padded by `pad` px, stacked with its mirror image when flip is on:
    (2 or 1, N, C, H+2p, W+2p). Cropping the mirror at offset dx is the mirror of the crop at 2p-dx,
    so choosing a view at random is a random horizontal flip."""
    padded = F.pad(x, (pad, pad, pad, pad))                            # (N, C, H+2p, W+2p)
    return torch.stack([padded, padded.flip(3)]) if flip else padded[None]


def crop_flip(views, order, pad, gen):
    """Images `order` of padded_views, each randomly cropped back to H x W (random crop with zero
    padding) from a random view (random flip): (len(order), C, H, W) uint8, and which view each is,
    (len(order), 4) int64 rows of (image, mirror, dy, dx). A strided view holds every crop of every
    image without copying; indexing it with each image's view, position and offsets copies the
    chosen crops in one pass, shuffled by `order`: no per-image Python, no per-pixel index
    arithmetic."""
    f, n, c, hp, wp = views.shape
    h, w, m, dev = hp - 2 * pad, wp - 2 * pad, len(order), views.device
    mirror = torch.randint(0, f, (m,), generator=gen, device=dev)
    dy = torch.randint(0, 2 * pad + 1, (m,), generator=gen, device=dev)
    dx = torch.randint(0, 2 * pad + 1, (m,), generator=gen, device=dev)
    s_f, s_n, s_c, s_h, s_w = views.stride()
    crops = views.as_strided((f, n, 2 * pad + 1, 2 * pad + 1, c, h, w),
                             (s_f, s_n, s_h, s_w, s_c, s_h, s_w))       # (F, N, 2p+1, 2p+1, C, H, W)
    return crops[mirror, order, dy, dx], torch.stack([order, mirror, dy, dx], 1)  # (M, C, H, W), (M, 4)


def cutout(x, size, gen):
    """DARTS's Cutout for a batch: zero a size x size square (clipped at the border) centred on a
    uniform random pixel of each image. x (B, C, H, W) normalised float."""
    b, _, h, w = x.shape
    dev = x.device
    cy = torch.randint(0, h, (b, 1), generator=gen, device=dev)
    cx = torch.randint(0, w, (b, 1), generator=gen, device=dev)
    ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
    in_rows = (ar_h >= cy - size // 2) & (ar_h < cy + size // 2)      # (B, H)
    in_cols = (ar_w >= cx - size // 2) & (ar_w < cx + size // 2)      # (B, W)
    hole = in_rows[:, :, None] & in_cols[:, None, :]                  # (B, H, W)
    return x.masked_fill(hole[:, None], 0.0)


def normalise(x, preset, memory_format=torch.contiguous_format):
    """uint8 (B, C, H, W) -> float32 (B, C, H, W) in `memory_format`, standardised with the data
    set's mean and std. The layout changes on the uint8 copy (a quarter of the bytes); the
    arithmetic runs in place."""
    mean, std = stats_on(preset, x.device)
    return x.contiguous(memory_format=memory_format).float().sub_(mean).div_(std)


@functools.lru_cache(maxsize=None)
def stats_on(preset, device):
    """The preset's mean and std as (1, C, 1, 1) tensors on `device`, scaled to 0..255 pixels; made
    once, not per batch (a host-to-device copy per batch would stall the GPU queue)."""
    def to(values):
        return torch.tensor(values, device=device).view(1, -1, 1, 1) * 255
    return to(preset.mean), to(preset.std)


def batches(data, part, batch_size, train, gen=None, cutout_size=0, workers=2,
            memory_format=torch.contiguous_format):
    """Yield (x float32 (B, 3, S, S) normalised, y int64 (B,), views) on data.device for one pass
    over `part` (data.train, data.val or data.test). train=True shuffles and augments with `gen`;
    views (B, 4) says which view of which image each row is (crop_flip), None where there is no
    finite set of views (evaluation batches, 224 px images)."""
    if isinstance(part, TensorSplit):
        xs, ys, views = part.x, part.y, None                           # (N, 3, S, S), (N,)
        if train:  # this epoch's order and augmentation, for all images at once
            order = torch.randperm(len(part), generator=gen, device=ys.device)
            padded = part.views(data.preset.pad, data.preset.flip)
            (xs, views), ys = crop_flip(padded, order, data.preset.pad, gen), ys[order]
        for i in range(0, len(part), batch_size):
            x = normalise(xs[i:i + batch_size], data.preset, memory_format)
            if cutout_size:
                x = cutout(x, cutout_size, gen)
            yield x, ys[i:i + batch_size], None if views is None else views[i:i + batch_size]
        return
    if cutout_size:
        raise ValueError("cutout is implemented for the small-image data sets only; use --cutout 0")
    loader = torch.utils.data.DataLoader(
        part, batch_size=batch_size, shuffle=train, generator=gen, num_workers=workers,
        pin_memory=data.device.type == "cuda", persistent_workers=False)
    for x, y in loader:
        yield (x.to(data.device, non_blocking=True, memory_format=memory_format),
               y.to(data.device, non_blocking=True), None)


# ----------------------------------------------------------------------------------------------------
# 224 px images: ImageFolder + DataLoader

class Transformed(torch.utils.data.Dataset):
    """The samples `indices` of an ImageFolder, read with its loader and this split's transform
    (so that the training part and the hold-out of one folder get different transforms)."""

    def __init__(self, folder, indices, transform):
        self.folder, self.indices, self.transform = folder, np.asarray(indices), transform

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        path, y = self.folder.samples[self.indices[i]]
        return self.transform(open_image(path)), y


def large_transforms(preset):
    norm = [transforms.ToTensor(), transforms.Normalize(preset.mean, preset.std)]
    s = preset.image_size
    train = transforms.Compose([transforms.RandomResizedCrop(s), transforms.RandomHorizontalFlip()] + norm)
    test = transforms.Compose([transforms.Resize(round(s / 0.875)), transforms.CenterCrop(s)] + norm)
    return train, test


class Classes(ImageFolder):
    """An ImageFolder of the given classes (sorted) only, so that labels follow the checked class
    set, not whatever other folders lie beside them."""

    def __init__(self, root, classes, is_valid_file=None):
        self.given = sorted(classes)
        super().__init__(str(root), is_valid_file=is_valid_file)

    def find_classes(self, directory):
        return self.given, {c: i for i, c in enumerate(self.given)}


def large_image_set(name, root, part, download, cache_dir):
    """The ImageFolder of split `part` ("train" or "test"). MIT67: one Images/ folder and the
    official split files (lines like "kitchen/int474.jpg", relative to Images/); ImageNet: train/
    and val/ folders. (download and cache_dir do not apply: these are read from disk every epoch.)"""
    if name == "imagenet":
        if not ((root / "train").is_dir() and (root / "val").is_dir()):
            raise FileNotFoundError(f"no imagenet data in {root}: expected {root}/train/<wnid>/*.JPEG "
                                    f"and {root}/val/<wnid>/*.JPEG")
        classes = folder_classes(name, root / "train", root / "val")
        return Classes(root / ("train" if part == "train" else "val"), classes)
    images = root / "Images"
    split_files = root / "TrainImages.txt", root / "TestImages.txt"
    if not (images.is_dir() and all(f.is_file() for f in split_files)):
        raise FileNotFoundError(f"no mit67 data in {root}: expected {images}/<class>/*.jpg with "
                                f"TrainImages.txt and TestImages.txt beside it")
    listed = [listed_images(f) for f in split_files]
    classes = [{path.split("/")[0] for path in paths} for paths in listed]
    check_classes(name, *zip(split_files, classes))
    split_file, wanted = split_files[part != "train"], listed[part != "train"]
    missing = sorted(path for path in wanted if not (images / path).is_file())
    if missing:
        raise FileNotFoundError(f"{split_file} lists {len(wanted)} images but {len(missing)} of them are "
                                f"not in {images} ({few(missing)}); the folder is incomplete")
    return Classes(images, classes[0], lambda p: Path(p).relative_to(images).as_posix() in wanted)


def listed_images(split_file):
    """The image paths (relative to Images/) that an MIT67 split file lists."""
    return {line.strip() for line in split_file.read_text().splitlines() if line.strip()}


@cli.cli
def main(argv=None):
    p = cli.Parser(description="Load a data set once (warming the image-folder cache) "
                                            "and print its splits.")
    p.add_argument("--dataset", default="digits", choices=DATASETS, help="data set name")
    p.add_argument("--data-dir", default=None, help="data folder (default: data/<dataset>, or data/ "
                                                    "for digits)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR")
    p.add_argument("--split", default="search", choices=("search", "final"),
                   help="search: train minus a hold-out, scored on it; final: train, scored on test")
    p.add_argument("--cache-dir", default=None, help="where decoded image folders are cached "
                                                     "(default ~/.cache/autokd)")
    args = p.parse_args(argv)
    data = load_data(args.dataset, args.data_dir, args.split, args.download, cache_dir=args.cache_dir)
    x, y, _ = next(batches(data, data.train, 8, train=True, gen=data.generator(0)))
    sizes = {k: len(getattr(data, k)) for k in ("train", "val", "test") if getattr(data, k) is not None}
    print(f"{data.name} ({data.split}): {sizes}, {data.num_classes} classes, "
          f"batch x {tuple(x.shape)} {x.dtype}, y {tuple(y.shape)}")


if __name__ == "__main__":
    sys.exit(main())
