"""Generator speed: sampling + build time, and forward+backward time per image, for the smallest,
a middle and the largest θ; and the batched weighted sum of DAG.forward against a loop of adds.
With --stages instead: the cost of the two stage rules (generator.stages_of) side by side for the
same three θ: parameters, MACs and activation memory per 32 px image (counts, the same on any machine).

    python bench/generator_speed.py --record            # CPU here; on a GPU machine it uses cuda:0
    python bench/generator_speed.py --stages --record

Prints one line per θ (and rule). Timings are medians of a few repeats after a warm-up step.
--record writes the printed figures into bench/RESULTS.md.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generator as G  # noqa: E402
from results import recorded  # noqa: E402

THETAS = {
    "all-min": {k: lo for k, (_, lo, _) in G.SPACE.items()},
    "middle": {"top_nodes": 6, "top_k": 4, "top_p": 0.5, "mid_nodes": 6, "mid_p": 0.6,
               "bottom_nodes": 6, "bottom_k": 4, "bottom_p": 0.5},
    "all-max": {k: hi for k, (_, _, hi) in G.SPACE.items()},
}


def timed(fn, repeats, device):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", action="store_true",
                   help="print the stage rules' parameters, MACs and memory per image instead of the timings")
    p.add_argument("--record", action="store_true", help="write the printed figures into bench/RESULTS.md")
    args = p.parse_args(argv)
    if args.stages:
        with recorded("generator_stages", "Generator: the cost of the two stage rules (bench/generator_speed.py)",
                      "python bench/generator_speed.py --stages --record", enabled=args.record):
            stage_costs()
        return
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    with recorded("generator_speed", "Generator: sampling, building, a training step (bench/generator_speed.py)",
                  "python bench/generator_speed.py --record", device, enabled=args.record):
        measure(device)


def stage_costs():
    """Parameters, MACs and activation memory per 32 px image (generator.profile, inference) of each
    θ of THETAS under each stage rule, seed 0, at the width the parameter limit allows."""
    print(f"{'θ':8s} {'stages':6s} {'cells per stage':15s} {'width':>5s} {'params':>9s} {'MACs':>9s} {'memory':>14s}")
    for name, theta in THETAS.items():
        for rule in G.STAGE_RULES:
            arch = G.sample(theta, seed=0, stages=rule)
            stats = G.profile(G.build(arch), arch["image_size"])
            cells = "/".join(str(sum(c["stage"] == s for c in arch["cells"])) for s in range(3))
            print(f"{name:8s} {rule:6s} {cells:15s} {arch['width']:5d} {stats['params'] / 1e6:7.3f} M "
                  f"{stats['macs'] / 1e9:7.3f} G {stats['memory_mb']:6.2f} MiB/image")


def measure(device):
    batch = 96 if device.type == "cuda" else 16
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}")
    for name, theta in THETAS.items():
        t = time.perf_counter()
        arch = G.sample(theta, seed=0)
        sample_s = time.perf_counter() - t
        t = time.perf_counter()
        model = G.build(arch).to(device)
        build_s = time.perf_counter() - t
        x = torch.randn(batch, 3, 32, 32, device=device)

        def step():
            model(x).logsumexp(1).mean().backward()
        step()  # warm-up
        s = timed(step, 3, device)
        units = sum(m["nodes"] for c in arch["cells"] for m in c["modules"])
        print(f"{name:8s} {units:5d} units  width {arch['width']:3d}  {arch['params'] / 1e6:.3f} M params  "
              f"sample {sample_s:.2f} s  build {build_s:.2f} s  fwd+bwd {1e3 * s / batch:.1f} ms/image")

    # a node's weighted sum over k inputs: one stacked product (DAG.forward) vs a Python loop of adds
    for k in (2, 5, 9):
        xs = [torch.randn(batch, 32, 16, 16, device=device) for _ in range(k)]
        w = torch.sigmoid(torch.randn(k, device=device))
        batched = timed(lambda: torch.tensordot(w, torch.stack(xs), dims=1), 50, device)
        looped = timed(lambda: sum(w[i] * xs[i] for i in range(k)), 50, device)
        print(f"weighted sum of {k} inputs: batched {1e6 * batched:.0f} µs, loop of adds {1e6 * looped:.0f} µs")


if __name__ == "__main__":
    main()
