"""The teacher's lessons computed once: its logits for every view of every training image.

While the augmentation is a finite set of views (crops of a zero-padded image and flips, no cutout:
CIFAR's 2 x 9 x 9 = 162 views per image), the teacher sees each view once, before the first student,
and every step looks its logits up instead of running the teacher (the paper's "lessons computed on
the fly"). A search's students share one table saved in its folder; the students of one GPU share its
copy. Where the views are not finite or the table would not fit, the teacher runs live.

    table = compute(teacher, data, autocast, memory_format, dtype, key)   # Lessons, (N, F, 2p+1, 2p+1, K)
    table(views)                                                          # (B, K) for a batch's views
"""
import fcntl
import hashlib
import tempfile
import time
from pathlib import Path

import torch

from data import TensorSplit, normalise
from machinery import files

MAX_BYTES = 8 * 2**30  # larger tables fall back to the live teacher


class Lessons:
    """logits (N, F, 2p+1, 2p+1, K): image, mirror, crop offsets dy and dx, class. `key` says what
    they were computed from, so that a stale file is not used."""

    def __init__(self, logits, key):
        self.logits, self.key = logits, key

    def __call__(self, views):  # views (B, 4) int64 rows of (image, mirror, dy, dx)
        image, mirror, dy, dx = views.unbind(1)
        return self.logits[image, mirror, dy, dx]                      # (B, K)


def why_live(data, cutout):
    """Why the lessons of `data`'s training split cannot be cached (a sentence), or None if they can."""
    if not isinstance(data.train, TensorSplit):
        return f"{data.name}'s random-resized crops are not a finite set of views"
    if cutout:
        return "cutout makes every view unique"
    p = data.preset
    n_views = (2 if p.flip else 1) * (2 * p.pad + 1) ** 2
    size = len(data.train) * n_views * data.num_classes * 2
    if size > MAX_BYTES:
        return f"the table would take {size / 2**30:.1f} GiB"
    return None


def compute(teacher, data, autocast, memory_format, dtype, key, batch_size=1024):
    """The teacher's logits for every view of data.train, in `dtype` on data.device."""
    p = data.preset
    padded = data.train.views(p.pad, p.flip)                          # (F, N, C, H+2p, W+2p)
    f, n, _, hp, wp = padded.shape
    h, w, offsets = hp - 2 * p.pad, wp - 2 * p.pad, 2 * p.pad + 1
    logits = torch.empty(n, f, offsets, offsets, data.num_classes, dtype=dtype, device=data.device)
    teacher.eval()
    with torch.inference_mode(), autocast:
        for mirror in range(f):
            for dy in range(offsets):
                for dx in range(offsets):
                    crops = padded[mirror, :, :, dy:dy + h, dx:dx + w]  # (N, C, H, W), a view
                    for i in range(0, n, batch_size):
                        x = normalise(crops[i:i + batch_size], p, memory_format)
                        logits[i:i + batch_size, mirror, dy, dx] = teacher(x).to(dtype)
    return Lessons(logits, key)


def save(lessons, path):
    files.save_checkpoint(path, {"logits": lessons.logits.cpu(), "key": lessons.key})


def load(path, key, device):
    """The lessons saved at `path` if they were computed for `key`, else None."""
    try:
        state = files.load_checkpoint(path, what="lessons file")
    except files.CheckpointError:
        return None
    if state.get("key") != key or not isinstance(state.get("logits"), torch.Tensor):
        return None
    return Lessons(state["logits"].to(device), key)


def shared(path, key, device, compute):
    """(Lessons, seconds spent computing them): those saved at `path` (see local_path) if they were
    computed for `key`, else compute() saved there. A file lock keeps the workers of one machine from
    computing them twice."""
    path = local_path(path)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = load(path, key, device)
        if table is not None:
            return table, 0.0
        start = time.perf_counter()
        table = compute()
        save(table, path)
        return table, time.perf_counter() - start


def local_path(path):
    """Where this machine keeps the lessons: `path`, in the driver's output folder, where this machine
    sees that folder (the driver's own, or a shared filesystem); else, on a Ray node without it, a file
    of the node's own in its temporary folder, named after `path`, so that its actors compute them once."""
    if Path(path).parent.is_dir():
        return path
    local = Path(tempfile.gettempdir()) / "autokd-lessons" / f"{hashlib.sha1(path.encode()).hexdigest()[:16]}.pt"
    local.parent.mkdir(parents=True, exist_ok=True)
    return str(local)
