"""Throughput of train.py, side by side in one run on whatever device is present (the issue's targets:
the on-device pipeline at least 5x torchvision's DataLoader; KD at most 1.4x a cross-entropy step).

1. Data: images/s of data.py's batched on-device augmentation (random crop with 4 px padding, flip,
   normalisation) against torchvision's usual pipeline (PIL image -> RandomCrop(32, padding=4) ->
   RandomHorizontalFlip -> ToTensor -> Normalize, as torchvision's CIFAR10 class feeds it) in a
   DataLoader with 2 workers, both producing normalised float batches of 96 on the device.
2. Training: images/s of train.fit for the 3.6 M-parameter NAGO student of the "middle" θ of
   bench/generator_speed.py, with KD from a DARTS teacher (teachers.build, untrained: speed does not
   depend on the weights) against plain cross-entropy (alpha = 0, no teacher forward at all).
3. Training again with AMP + channels_last against float32 + contiguous on CUDA; with bf16 autocast
   (--amp bf16) against float32 on the CPU.

    python bench/train_speed.py --data-dir /tmp/cifar10-jpeg --threads 1 --record   # a CIFAR-10 image folder

--record writes the printed figures into bench/RESULTS.md. The KD cost is the teacher's forward pass
over a student's forward + backward; the teacher runs in channels_last (faster on the CPU too).
"""
import argparse
import dataclasses
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data as D  # noqa: E402
import generator as G  # noqa: E402
import train as T  # noqa: E402
from generator_speed import THETAS  # noqa: E402  (the same "middle" θ as the generator benchmark)
from results import recorded  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PILCrops(Dataset):
    """What torchvision's CIFAR10 class does per sample: uint8 HWC array -> PIL image -> transforms."""

    def __init__(self, split, preset):
        from torchvision import transforms as TV
        self.x = split.x.permute(0, 2, 3, 1).cpu().numpy()              # (N, H, W, 3)
        self.y = split.y.cpu().numpy()
        self.transform = TV.Compose([TV.RandomCrop(preset.image_size, padding=preset.pad),
                                     TV.RandomHorizontalFlip(), TV.ToTensor(),
                                     TV.Normalize(preset.mean, preset.std)])

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def epoch_rate(make_batches, device, epochs):
    """Images/s of the fastest of `epochs` full passes, each timed from the iterator's creation
    (so a whole-epoch augmentation and the DataLoader's worker start-up are both counted)."""
    best = 0.0
    for _ in range(epochs):
        sync(device)
        start, seen = time.perf_counter(), 0
        for batch in make_batches():
            seen += len(batch[1])
        sync(device)
        best = max(best, seen / (time.perf_counter() - start))
    return best


def pipeline_rates(data, batch_size, workers, epochs):
    gen = data.generator(0)

    def ours():
        return D.batches(data, data.train, batch_size, train=True, gen=gen)
    loader = DataLoader(PILCrops(data.train, data.preset), batch_size=batch_size, shuffle=True,
                        num_workers=workers, pin_memory=data.device.type == "cuda")

    def theirs():
        return ((x.to(data.device, non_blocking=True), y.to(data.device, non_blocking=True))
                for x, y in loader)
    rates = [epoch_rate(ours, data.device, epochs)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each DataLoader worker runs
    rates.append(epoch_rate(ours, data.device, epochs))
    torch.set_num_threads(threads)
    return (*rates, epoch_rate(theirs, data.device, epochs))


def train_rate(data, teacher, alpha, device, amp, channels_last):
    """Images/s of train.fit's second epoch (the first one warms up kernels and caches)."""
    torch.manual_seed(0)
    student = G.build(G.sample(THETAS["middle"], 0, data.image_size, data.num_classes))
    protocol = T.Protocol(epochs=2, amp=amp, channels_last="on" if channels_last else "off", bn_batches=1)
    result = T.fit(student, data, protocol, teacher if alpha > 0 else None, 4.0, alpha,
                   T.RunOptions(device=device, log=lambda line: None))
    return result["history"][-1]["images_per_s"], sum(p.numel() for p in student.parameters())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100"), help="data set")
    p.add_argument("--data-dir", default=None, help="its folder (layouts in data.py)")
    p.add_argument("--cache-dir", default=None, help="image-folder cache (default ~/.cache/autokd)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=T.Protocol.batch_size, help="batch size")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the comparison")
    p.add_argument("--pipeline-epochs", type=int, default=2,
                   help="full passes over the training split per pipeline (the fastest counts)")
    p.add_argument("--train-images", type=int, default=None,
                   help="training images per timed epoch (default 3 batches on CPU, 100 on CUDA)")
    p.add_argument("--repeats", type=int, default=2, help="timed training runs per setting")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for the training part (default: torch's choice); on a busy "
                        "machine 1 avoids waiting for descheduled pool threads at every op")
    p.add_argument("--teacher-width", type=int, default=36, help="DARTS teacher's initial channels")
    p.add_argument("--teacher-layers", type=int, default=20, help="DARTS teacher's cells")
    p.add_argument("--record", action="store_true", help="write the figures into bench/RESULTS.md")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    with recorded("train_speed", "Data pipeline and KD overhead (bench/train_speed.py)",
                  "python bench/train_speed.py --data-dir DIR --threads 1 --record", device, enabled=args.record):
        measure(args, device)


def measure(args, device):
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    print(f"device: {name}; torch {torch.__version__}")

    data = D.load_data(args.dataset, args.data_dir, "search", device=device, cache_dir=args.cache_dir)
    ours, ours_1, theirs = pipeline_rates(data, args.batch_size, args.workers, args.pipeline_epochs)
    print(f"\ndata pipeline, {args.dataset} train split ({len(data.train)} images), batch "
          f"{args.batch_size}, fastest of {args.pipeline_epochs} epochs")
    print(f"  on-device batched augmentation (data.py)     {ours:10,.0f} img/s  "
          f"({ours / theirs:.1f} x the DataLoader)")
    print(f"    the same with 1 torch thread               {ours_1:10,.0f} img/s  "
          f"({ours_1 / theirs:.1f} x)")
    print(f"  torchvision DataLoader, {args.workers} workers, PIL      {theirs:10,.0f} img/s")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    import teachers
    teacher = teachers.build("darts", data.num_classes, width=args.teacher_width,
                             layers=args.teacher_layers)
    n = args.train_images or args.batch_size * (100 if device.type == "cuda" else 3)
    small = dataclasses.replace(data, train=D.TensorSplit(data.train.x[:n], data.train.y[:n]),
                                val=D.TensorSplit(data.val.x[:args.batch_size],
                                                  data.val.y[:args.batch_size]))
    modes = [("fp32", "off", False)]
    if device.type == "cuda":
        modes.append(("AMP + channels_last", "auto", True))
    else:  # --amp bf16, which train.py allows on the CPU (fast where the CPU has bf16 units)
        modes.append(("bf16 autocast", "bf16", False))
    t_params = sum(p.numel() for p in teacher.parameters())
    print(f"\ntraining (train.fit, {torch.get_num_threads()} torch threads), batch {args.batch_size}, "
          f"{n} images per epoch, second epoch timed; teacher DARTS C={args.teacher_width}, "
          f"{args.teacher_layers} cells, {t_params / 1e6:.2f} M params")
    for label, amp, cl in modes:
        ce = kd = 0.0
        for _ in range(args.repeats):  # alternated, fastest kept: a busy machine slows either
            ce_now, s_params = train_rate(small, None, 0.0, device, amp, cl)
            ce, kd = max(ce, ce_now), max(kd, train_rate(small, teacher, 0.9, device, amp, cl)[0])
        print(f"  {label:20s} student {s_params / 1e6:.2f} M: cross-entropy {ce:8,.1f} img/s, "
              f"KD {kd:8,.1f} img/s, KD step costs {ce / kd:.2f} x")

if __name__ == "__main__":
    main()
