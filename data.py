"""Data sets for train.py: loading, the search/final splits, and augmentation (paper Sec. 4).

Small images (CIFAR-10/100 at 32 px, the bundled UCI digits at 16 px) are held on the training
device as one uint8 tensor and augmented there in whole batches with tensor ops (random crop with
zero padding, horizontal flip, cutout): no per-sample Python and no DataLoader in the hot loop, as in
KellerJordan/airbench. 224 px sets (MIT67, ImageNet) stream from disk through a DataLoader with
workers and torchvision's usual transforms.

Splits. "search": train on the training set minus a seeded hold-out, score on the hold-out (5,000
images for CIFAR), as Alg. 1's f_KD(θ, b) needs; the test split is not read. "final": train on the
whole training set, score on the test split (retrain.py, Table 1). (The released NAGO code scored
search candidates on the test set; we do not.)

On-disk layouts that --data-dir may hold:
    cifar10/cifar100  torchvision's  <dir>/cifar-10-batches-py/ or <dir>/cifar-100-python/  (--download)
                      or an image folder  <dir>/train/<class>/*.jpg, <dir>/test/<class>/*.jpg
                      (decoded once with Pillow into a uint8 cache in --cache-dir)
    digits            <dir>/digits.csv.gz (bundled in data/; see data/README.md)
    mit67             <dir>/Images/<class>/*.jpg, <dir>/TrainImages.txt, <dir>/TestImages.txt
    imagenet          <dir>/train/<wnid>/*.JPEG, <dir>/val/<wnid>/*.JPEG

    python data.py --dataset digits                  # split sizes and a batch's shape, about 1 s
    python data.py --dataset cifar10 --data-dir /tmp/cifar10-jpeg   # decodes and caches, about 20 s
"""
import argparse
import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent
HOLDOUT_SEED = 0   # one fixed hold-out, so every candidate of a search is scored on the same images
DIGITS_TEST = 400  # digits: a fixed, seeded 1,397 / 400 train / test split (the file has no split)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


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
    """A whole split on the training device: x (N, 3, H, W) uint8, y (N,) int64."""
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self):
        return len(self.y)


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

    def generator(self, seed):
        """The random stream of augmentation and shuffling, on the device the batches are made on."""
        on_device = isinstance(self.train, TensorSplit)
        return torch.Generator(self.device if on_device else "cpu").manual_seed(seed)


def default_data_dir(name):
    return REPO / "data" if name == "digits" else REPO / "data" / name


def load_data(name, data_dir=None, split="search", download=False, device="cpu", seed=HOLDOUT_SEED,
              val_size=None, cache_dir=None):
    """Load data set `name` for a "search" run (train minus a seeded hold-out of `val_size` images,
    scored on the hold-out) or a "final" run (all of train, scored on test). Returns a Data."""
    if name not in PRESETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in ("search", "final"):
        raise ValueError(f"split must be 'search' or 'final', not {split!r}")
    preset = PRESETS[name]
    root = Path(data_dir) if data_dir is not None else default_data_dir(name)
    val_size = preset.val_size if val_size is None else val_size
    device = torch.device(device)
    if preset.image_size > 64:
        train, test = large_image_sets(name, root)
    else:
        train, test = small_image_arrays(name, root, download, cache_dir)
    n_train = len(train[1]) if isinstance(train, tuple) else len(train)
    if split == "search" and not 0 < val_size < n_train:
        raise ValueError(f"a hold-out of {val_size} images needs a training set larger than "
                         f"{n_train} images; choose a smaller --val-size")
    rest, val = np.arange(n_train), None
    if split == "search":
        perm = np.random.default_rng(seed).permutation(n_train)
        rest, val = np.sort(perm[val_size:]), np.sort(perm[:val_size])
    if isinstance(train, tuple):  # small images: (x uint8 (N, 3, H, W), y int64 (N,)) on the CPU
        def put(x, y, idx=None):
            if idx is not None:
                x, y = x[idx], y[idx]
            return TensorSplit(x.to(device), y.to(device))
        parts = (put(*train, rest), put(*train, val) if val is not None else None,
                 put(*test) if split == "final" else None)
    else:
        tf_train, tf_eval = large_transforms(preset)
        parts = (Transformed(train, rest, tf_train),
                 Transformed(train, val, tf_eval) if val is not None else None,
                 Transformed(test, np.arange(len(test)), tf_eval) if split == "final" else None)
    return Data(name, split, preset.num_classes, preset.image_size, preset, device, *parts)


# ----------------------------------------------------------------------------------------------------
# Small images: read whole splits into uint8 tensors

def small_image_arrays(name, root, download, cache_dir):
    """((x_train, y_train), (x_test, y_test)), x uint8 (N, 3, H, W), y int64 (N,), on the CPU."""
    if (root / "train").is_dir():
        return image_folder_arrays(root, PRESETS[name].image_size, cache_dir)
    if name == "digits":
        return digits_arrays(root / "digits.csv.gz")
    return torchvision_cifar_arrays(name, root, download)


def digits_arrays(path):
    """The UCI digits (8x8, values 0..16) as 16x16 RGB uint8: bilinear upsampling (smoother strokes
    than nearest), grey copied to 3 channels, and the fixed seeded 1,397 / 400 split."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; point --data-dir at the folder holding "
                                f"digits.csv.gz (the repository's data/)")
    rows = torch.from_numpy(np.loadtxt(path, delimiter=",", dtype=np.int64))  # (1797, 65)
    x = rows[:, :64].float().view(-1, 1, 8, 8) * (255 / 16)                    # (N, 1, 8, 8)
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)  # (N, 1, 16, 16)
    x = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()  # (N, 3, 16, 16)
    y = rows[:, 64]
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    test, train = perm[:DIGITS_TEST].sort().values, perm[DIGITS_TEST:].sort().values
    return (x[train], y[train]), (x[test], y[test])


def torchvision_cifar_arrays(name, root, download):
    """CIFAR's original pickled batches through torchvision's own class (which checks their MD5)."""
    from torchvision import datasets
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    if not download and not (root / cls.base_folder).is_dir():
        raise FileNotFoundError(
            f"no {name} data in {root}: expected torchvision's {root / cls.base_folder} (pass "
            f"--download to fetch it) or an image folder {root}/train/<class>/*.jpg and "
            f"{root}/test/<class>/*.jpg")
    out = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=download)
        except RuntimeError as e:  # torchvision's "Dataset not found or corrupted"
            raise ValueError(f"{root / cls.base_folder} failed torchvision's check ({e}); delete it "
                             f"and run again with --download") from None
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
        out.append((x, torch.tensor(ds.targets, dtype=torch.int64)))
    return tuple(out)


def image_folder_arrays(root, image_size, cache_dir):
    """<root>/{train,test}/<class>/<image>, decoded once with Pillow and cached as uint8 arrays.
    The cache key covers the folder's path and every file's name, size and mtime."""
    if not (root / "test").is_dir():
        raise FileNotFoundError(f"{root}/train exists but {root}/test does not; an image folder "
                                f"needs both train/<class>/ and test/<class>/")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    files = {part: [(f, c) for c, cls in enumerate(classes)
                    for f in sorted((root / part / cls).iterdir())
                    if f.suffix.lower() in IMAGE_EXTENSIONS] for part in ("train", "test")}
    key = hashlib.sha1(str(root.resolve()).encode())
    for part in files.values():
        for f, c in part:
            st = f.stat()
            key.update(f"{f.name}:{c}:{st.st_size}:{st.st_mtime_ns};".encode())
    cache_dir = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "autokd"
    cache = cache_dir / f"{root.name}-{image_size}px-{key.hexdigest()[:16]}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            arrays = {k: z[k] for k in z.files}
    else:
        arrays = {}
        for part, items in files.items():
            if not items:
                raise FileNotFoundError(f"no images in {root / part}/<class>/")
            arrays[f"{part}_x"] = decode_images([f for f, _ in items], image_size)
            arrays[f"{part}_y"] = np.array([c for _, c in items], dtype=np.int64)
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".tmp", delete=False) as f:
            np.savez(f, **arrays)
        os.chmod(f.name, 0o644)
        os.replace(f.name, cache)
    return tuple((torch.from_numpy(arrays[f"{p}_x"]), torch.from_numpy(arrays[f"{p}_y"]))
                 for p in ("train", "test"))


def decode_images(paths, image_size):
    """uint8 (N, 3, S, S); Pillow releases the GIL while decoding, so threads use every core."""
    from PIL import Image

    def read(path):
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(im)                                      # (S, S, 3)
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        x = np.stack(list(pool.map(read, paths, chunksize=256)))      # (N, S, S, 3)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))               # (N, 3, S, S)


# ----------------------------------------------------------------------------------------------------
# Small images: batched augmentation on the device

def crop_flip(x, pad, flip, gen):
    """Random crop with `pad` px of zero padding and random horizontal flip, for a whole batch in one
    gather. x (B, C, H, W) uint8 -> (B, C, H, W) uint8 in channels_last memory."""
    b, _, h, w = x.shape
    dev = x.device
    x = F.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)             # (B, H+2p, W+2p, C)
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen, device=dev)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen, device=dev)
    rows = dy + torch.arange(h, device=dev)                            # (B, H)
    cols = dx + torch.arange(w, device=dev)                            # (B, W)
    if flip:
        mirrored = torch.rand(b, 1, generator=gen, device=dev) < 0.5   # (B, 1)
        cols = torch.where(mirrored, cols.flip(1), cols)
    batch = torch.arange(b, device=dev)[:, None, None]                 # (B, 1, 1)
    out = x[batch, rows[:, :, None], cols[:, None, :]]                 # (B, H, W, C)
    return out.permute(0, 3, 1, 2)                                     # (B, C, H, W)


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


def normalise(x, preset):
    """uint8 (B, C, H, W) -> float32 (B, C, H, W), standardised with the data set's mean and std."""
    mean = torch.tensor(preset.mean, device=x.device).view(1, -1, 1, 1) * 255
    std = torch.tensor(preset.std, device=x.device).view(1, -1, 1, 1) * 255
    return (x.float() - mean) / std


def batches(data, part, batch_size, train, gen=None, cutout_size=0, workers=2,
            memory_format=torch.contiguous_format):
    """Yield (x float32 (B, 3, S, S) normalised, y int64 (B,)) on data.device for one pass over
    `part` (data.train, data.val or data.test). train=True shuffles and augments with `gen`."""
    if isinstance(part, TensorSplit):
        n = len(part)
        order = torch.randperm(n, generator=gen, device=part.y.device) if train else None
        for i in range(0, n, batch_size):
            if train:
                idx = order[i:i + batch_size]
                x = crop_flip(part.x[idx], data.preset.pad, data.preset.flip, gen)
                x = normalise(x, data.preset)
                if cutout_size:
                    x = cutout(x, cutout_size, gen)
                y = part.y[idx]
            else:
                x, y = normalise(part.x[i:i + batch_size], data.preset), part.y[i:i + batch_size]
            yield x.contiguous(memory_format=memory_format), y
        return
    if cutout_size:
        raise ValueError("cutout is implemented for the small-image data sets only; use --cutout 0")
    loader = torch.utils.data.DataLoader(
        part, batch_size=batch_size, shuffle=train, generator=gen, num_workers=workers,
        pin_memory=data.device.type == "cuda", persistent_workers=False)
    for x, y in loader:
        yield (x.to(data.device, non_blocking=True, memory_format=memory_format),
               y.to(data.device, non_blocking=True))


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
        return self.transform(self.folder.loader(path)), y


def large_transforms(preset):
    from torchvision import transforms as T
    norm = [T.ToTensor(), T.Normalize(preset.mean, preset.std)]
    s = preset.image_size
    train = T.Compose([T.RandomResizedCrop(s), T.RandomHorizontalFlip()] + norm)
    test = T.Compose([T.Resize(round(s / 0.875)), T.CenterCrop(s)] + norm)
    return train, test


def large_image_sets(name, root):
    """(train ImageFolder, test ImageFolder). MIT67: one Images/ folder and the official split files
    (lines like "kitchen/int474.jpg", relative to Images/); ImageNet: train/ and val/ folders."""
    from torchvision.datasets import ImageFolder
    if name == "imagenet":
        if not ((root / "train").is_dir() and (root / "val").is_dir()):
            raise FileNotFoundError(f"no imagenet data in {root}: expected {root}/train/<wnid>/*.JPEG "
                                    f"and {root}/val/<wnid>/*.JPEG")
        return ImageFolder(str(root / "train")), ImageFolder(str(root / "val"))
    images, lists = root / "Images", (root / "TrainImages.txt", root / "TestImages.txt")
    if not (images.is_dir() and all(f.is_file() for f in lists)):
        raise FileNotFoundError(f"no mit67 data in {root}: expected {images}/<class>/*.jpg with "
                                f"{lists[0].name} and {lists[1].name} beside it")
    out = []
    for split_file in lists:
        wanted = {line.strip() for line in split_file.read_text().splitlines() if line.strip()}
        out.append(ImageFolder(str(images), is_valid_file=lambda p, w=wanted:
                               Path(p).relative_to(images).as_posix() in w))
        if len(out[-1]) != len(wanted):
            raise FileNotFoundError(f"{split_file} lists {len(wanted)} images but {len(out[-1])} "
                                    f"are in {images}; the folder is incomplete")
    return tuple(out)


def main(argv=None):
    p = argparse.ArgumentParser(description="Load a data set once (warming the image-folder cache) "
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
    try:
        data = load_data(args.dataset, args.data_dir, args.split, args.download,
                         cache_dir=args.cache_dir)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}")
    x, y = next(batches(data, data.train, 8, train=True, gen=data.generator(0)))
    sizes = {k: len(getattr(data, k)) for k in ("train", "val", "test") if getattr(data, k) is not None}
    print(f"{data.name} ({data.split}): {sizes}, {data.num_classes} classes, "
          f"batch x {tuple(x.shape)} {x.dtype}, y {tuple(y.shape)}")


if __name__ == "__main__":
    main()
