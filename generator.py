"""G(θ): NAGO's hierarchical random-graph generator (Ru et al., NeurIPS 2020; AutoKD Sec. 3.2), which
turns θ and a seed into a student: cells wired by a Watts-Strogatz graph (top_nodes, top_k, top_p),
each a graph of modules (Erdős-Rényi: mid_nodes, mid_p), each a graph of ReLU-Conv3x3-BN units
(Watts-Strogatz: bottom_nodes, bottom_k, bottom_p); stem, stages and initialisation as NAGO's code.

    arch = sample(theta, seed)    # plain JSON data: every graph, the stage of every cell, the width
    model = build(arch)           # the torch.nn.Module, rebuilt bit-for-bit from arch

    python generator.py --theta best.json --seed 3 --save arch.json --draw arch.png   # Fig. 5
    python generator.py --theta best.json --stages nago      # NAGO's stage rule instead of the even split

It prints the graph sizes, the width chosen for the parameter limit (4.0 M at 32 px), parameters,
MACs and activation memory per sample.
"""

import sys
import time
import weakref

import networkx as nx
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from torch.utils._pytree import tree_flatten

from machinery import cli, files, schema
from teachers.darts import AuxiliaryHead as DARTSAuxiliaryHead, ScheduledDropPath, drop_path

# The eight searched hyperparameters, (type, low, high), ranges of NAGO's released configuration.
# bohb.py reads this; search.py joins it with kd_loss.SPACE.
SPACE = {
    "top_nodes": (int, 3, 10),        # cells in the network
    "top_k": (int, 2, 5),             # Watts-Strogatz ring neighbours (networkx uses k // 2 per side)
    "top_p": (float, 0.1, 1.0),       # Watts-Strogatz rewiring probability
    "mid_nodes": (int, 3, 10),        # modules in a cell
    "mid_p": (float, 0.2, 1.0),       # Erdős-Rényi edge probability
    "bottom_nodes": (int, 3, 10),     # operation units in a module
    "bottom_k": (int, 2, 5),
    "bottom_p": (float, 0.1, 1.0),
}
STAGE_RATIOS = (1, 2, 4)  # widths of the three stages, relative to the base width C
STAGE_RULES = ("even", "nago")  # how the cells are split into stages (stages_of); search/train/retrain's --stages
HEAD_WIDTH = 1280
SMALL_IMAGE = 40  # below this many pixels the stem keeps full resolution (CIFAR); above, it divides by 4


def default_max_params(image_size):
    """Paper Sec. 4: students are limited to 4.0 M parameters on small images, 6.0 M on large ones."""
    return 4.0e6 if image_size < SMALL_IMAGE else 6.0e6


def check_theta(theta):
    """θ with integers as int and floats as float; one clear UserError for anything else (a best.json's
    τ and α are not θ: train.check_config checks the whole configuration)."""
    return cli.check_config(theta, SPACE)


# ----------------------------------------------------------------------------------------------
# Sampling: θ and a seed -> plain architecture data

def derived_seed(seed, *path):
    """A 32-bit seed for one graph draw, the same on every machine (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0])


def random_graph(model, n, seed, path, k=None, p=None):
    """Draw one connected undirected graph from a seed derived from (seed, *path).

    Watts-Strogatz: networkx's connected_watts_strogatz_graph, which redraws until the graph is
    connected. networkx joins each node to k // 2 neighbours per side, so k = 3 builds the same ring
    as k = 2; the released [2, 5] range is kept for fidelity. Like the released NAGO code, k is
    clipped to n − 1, so a k of n or more still builds a rewired ring (networkx would return the
    complete graph for k = n). Erdős-Rényi: redrawn with the next derived seed until connected. Every
    draw in the box is connected with probability above 8 % (4 nodes at p = 0.2 is the worst), so a
    few dozen draws suffice; the released code gives up after 30 and then fails.
    """
    if model == "ws":
        return nx.connected_watts_strogatz_graph(n, min(k, n - 1), p, tries=10_000, seed=derived_seed(seed, *path))
    for attempt in range(10_000):
        g = nx.erdos_renyi_graph(n, p, seed=derived_seed(seed, *path, attempt))
        if nx.is_connected(g):
            return g
    raise AssertionError(f"no connected graph in 10,000 draws for er n={n} p={p}")


def to_dag(g):
    """Undirected graph -> DAG data: edges point from the lower to the higher node id.

    Input nodes (no lower-id neighbour) all receive the graph's input; output nodes (no higher-id
    neighbour) are averaged into the graph's output.
    """
    edges = sorted((min(u, v), max(u, v)) for u, v in g.edges())
    n = g.number_of_nodes()
    has_pred = {v for _, v in edges}
    has_succ = {u for u, _ in edges}
    return {"nodes": n, "edges": [list(e) for e in edges],
            "inputs": [v for v in range(n) if v not in has_pred],
            "outputs": [v for v in range(n) if v not in has_succ]}


def stages_of(n, rule="even"):
    """The stage (0, 1, 2: image / 1, / 2, / 4; widths C, 2C, 4C) of each of n top-level cells.

    even  Interpretation (stages): three consecutive stages of as near equal size as possible
          (10 cells -> 4, 3, 3). Neither the AutoKD nor the NAGO paper states a stage rule.
    nago  NAGO's released configuration: get_stage_list (logical_graph.py) with stage ratios 1.0,
          1.0, 1.0. Three cells take a stage each; otherwise a cell moves to the next stage once its
          index reaches a running threshold that starts at ratio · n = n, which no index reaches: a
          network of more than 3 cells is one stage at full resolution and width C.
    """
    if rule == "nago":
        return [0, 1, 2] if n == 3 else [0] * n
    return [stage for stage, chunk in enumerate(np.array_split(np.arange(n), 3)) for _ in chunk]


def stages_rule(arch):
    """The stage rule an architecture was sampled with; files from before the rule was recorded: even."""
    return arch.get("stages_rule", "even")


def sample(theta, seed, image_size=32, num_classes=10, max_params=None, *, stages="even", width_multiple=1):
    """Sample the architecture data of one network from G(θ), the first step of f_KD(θ, b) (Alg. 1
    line 7; train.f_kd). The same (θ, seed) gives the same graphs on every machine; every cell and
    every module draws its own graph. `stages` is the stage rule (STAGE_RULES, stages_of). The base
    width is the largest within the parameter limit that is a multiple of `width_multiple`.

    Interpretation (width_multiple): the paper takes the largest width that fits. 8 rounds it down
    so that every stage's channels are multiples of 8, which bf16 tensor-core convolutions want,
    at the cost of some of the parameters the limit allows; 1 (the default) is the paper's."""
    theta = check_theta(theta)
    if stages not in STAGE_RULES:
        raise ValueError(f"unknown stage rule {stages!r}: choose one of {', '.join(STAGE_RULES)}")
    if width_multiple < 1:
        raise ValueError(f"width_multiple must be a positive integer, not {width_multiple}")
    if max_params is None:
        max_params = default_max_params(image_size)
    top = to_dag(random_graph("ws", theta["top_nodes"], seed, (0,), theta["top_k"], theta["top_p"]))
    cells = []
    for c in range(theta["top_nodes"]):
        mid = to_dag(random_graph("er", theta["mid_nodes"], seed, (1, c), p=theta["mid_p"]))
        modules = [to_dag(random_graph("ws", theta["bottom_nodes"], seed, (2, c, m),
                                       theta["bottom_k"], theta["bottom_p"]))
                   for m in range(theta["mid_nodes"])]
        cells.append({"graph": mid, "modules": modules})
    for cell, stage in zip(cells, stages_of(theta["top_nodes"], stages)):
        cell["stage"] = stage
    arch = {"theta": theta, "seed": int(seed), "image_size": int(image_size), "num_classes": int(num_classes),
            "max_params": int(max_params), "stages_rule": stages, "stage_ratios": list(STAGE_RATIOS),
            "width_multiple": int(width_multiple), "top": top, "cells": cells}
    arch["width"], arch["params"] = choose_width(arch)
    return arch


def count_params(arch, width):
    """Exact parameter count of build(arch) at base width `width`; built on the meta device, so no
    memory is allocated and no weights are initialised."""
    with torch.device("meta"):
        return sum(p.numel() for p in Network({**arch, "width": width}).parameters())


def choose_width(arch):
    """Paper Sec. 4: the largest base width C whose exact parameter count (head included) is within
    the limit. NAGO used an approximate formula that misses the head and the 1x1 convs; we count the
    real module. Outside the stem every parameter tensor's size is a product of at most two widths
    that are each linear in C (stage widths C, 2C, 4C; the head's 1280; the classes), so that count
    is exactly a quadratic a·C² + b·C + c: three counts fix it. The stem (C // 2 channels at 224 px)
    is counted on its own at each width tried (from 2 at 224 px, where the stem halves C)."""
    limit = arch["max_params"]

    def stem_count(width):
        with torch.device("meta"):
            return sum(p.numel() for p in stem(width, arch["image_size"]).parameters())

    first = 1 if arch["image_size"] < SMALL_IMAGE else 2
    r0, r1, r2 = (count_params(arch, first + i) - stem_count(first + i) for i in range(3))

    def count(width):  # Newton's form through widths first, first + 1, first + 2, in exact integers
        t = width - first
        return r0 + (r1 - r0) * t + (r2 - 2 * r1 + r0) * (t * (t - 1) // 2) + stem_count(width)

    if count(first) > limit:
        raise ValueError(f"no width fits {limit:,} parameters: even width {first} has {count(first):,}; "
                         f"raise --max-params.")
    low, high = first, 2 * first  # the count grows with the width: double, then bisect, count(low) <= limit
    while count(high) <= limit:
        low, high = high, 2 * high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if count(mid) <= limit else (low, mid)
    multiple = arch.get("width_multiple", 1)
    aligned = low // multiple * multiple
    if aligned < first:
        raise ValueError(f"no multiple of {multiple} fits {limit:,} parameters: the widest width that fits is "
                         f"{low}; raise --max-params or lower --width-multiple.")
    return aligned, count(aligned)


# ----------------------------------------------------------------------------------------------
# Building: architecture data -> torch.nn.Module

def unit(c_in, c_out):
    """The operation unit at the bottom level: ReLU -> Conv3x3 -> BatchNorm, stride 1. As in NAGO, a
    cell that receives a narrower input widens it here, in the units that read the cell's input."""
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))


def separable(c_in, c_out, stride):
    """NAGO's depthwise-separable conv: a 3x3 depthwise conv, then a 1x1 pointwise conv."""
    return nn.Sequential(nn.Conv2d(c_in, c_in, 3, stride, padding=1, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False))


def stem(c, image_size):
    """NAGO's stems. Small images: Conv3x3 -> BN -> ReLU -> Conv3x3 -> BN at full resolution. Large
    images (224 px -> 56 px): a stride-2 separable conv 3 -> C // 2 and BN, then a stride-2 separable
    ReLU-Conv-BN unit C // 2 -> C. No conv whose output a BatchNorm normalises has a bias: the BN
    cancels it (NAGO's code keeps such biases; they change the parameter count, nothing else)."""
    if image_size < SMALL_IMAGE:
        return nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                             nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
    return nn.Sequential(separable(3, c // 2, 2), nn.BatchNorm2d(c // 2),
                         nn.ReLU(), separable(c // 2, c, 2), nn.BatchNorm2d(c))


def edge(factor, c_in, c_out=None):
    """An edge between cells (NAGO's merge): average-pooled down by `factor` to the receiving cell's
    resolution, then, where c_out is given, projected by a 1x1 conv with a bias and no BatchNorm."""
    layers = ([nn.AvgPool2d(factor)] if factor > 1 else []) + ([nn.Conv2d(c_in, c_out, 1)] if c_out else [])
    return nn.Sequential(*layers) if layers else nn.Identity()


class DAG(nn.Module):
    """One level of the hierarchy: a DAG whose nodes are modules (units, modules or cells).

    A node with several inputs takes their sum weighted by sigmoid(w) (a learned positive weight per
    edge, w initialised to 1, as in randomly wired networks), computed as one batched product rather
    than a Python loop of adds. `edges` maps an edge (u, v), with u = "in" for the graph input and
    v = "out" for the output average, to the module that changes its resolution and width; an edge
    in `projected` goes through a 1x1 conv and, as in NAGO, joins the sum without a weight. A DAG
    built with `drop_inputs` (a module's graph of units) applies drop path to the inputs of such a
    node when forward is given a probability (see Network).
    """

    def __init__(self, graph, nodes, edges=None, projected=(), drop_inputs=False):
        super().__init__()
        n = graph["nodes"]
        self.drop_inputs = drop_inputs
        self.nodes = nn.ModuleList(nodes)
        self.inputs, self.outputs = set(graph["inputs"]), list(graph["outputs"])
        # each node's inputs, the weighted ones first, then the projected ones
        self.preds = [sorted((u for u, w in graph["edges"] if w == v), key=lambda u: (u, v) in projected)
                      for v in range(n)]
        self.unweighted = [sum((u, v) in projected for u in p) for v, p in enumerate(self.preds)]
        # the last node that reads each output, so inference can free it early
        self.last_use = [max([v for u, v in graph["edges"] if u == x], default=n) for x in range(n)]
        self.edge_w = nn.ParameterDict({str(v): nn.Parameter(torch.ones(len(p) - self.unweighted[v]))
                                        for v, p in enumerate(self.preds) if len(p) > 1})
        self.edges = nn.ModuleDict({f"{u}->{v}": m for (u, v), m in (edges or {}).items()
                                    if not isinstance(m, nn.Identity)})

    def adapt(self, x, u, v):
        key = f"{u}->{v}"
        return self.edges[key](x) if key in self.edges else x

    def forward(self, x, drop_prob=None, tap=None):
        """The graph's output. drop_prob: a 0-dim tensor (training only), passed on to the nested
        DAGs. tap: a node id; then (output, the input that node received)."""
        outs = {}
        for v, node in enumerate(self.nodes):
            if v in self.inputs:
                h = self.adapt(x, "in", v)
            elif len(self.preds[v]) == 1:
                h = self.adapt(outs[self.preds[v][0]], self.preds[v][0], v)
            else:
                xs = torch.stack([self.adapt(outs[u], u, v) for u in self.preds[v]])  # (k, B, C, H, W)
                if drop_prob is not None and self.drop_inputs:  # each input of each sample on its own
                    xs = drop_path(xs.flatten(0, 1), drop_prob).unflatten(0, xs.shape[:2])  # (k, B, C, H, W)
                w = torch.sigmoid(self.edge_w[str(v)]).to(xs.dtype)
                if self.unweighted[v]:
                    w = torch.cat([w, w.new_ones(self.unweighted[v])])  # (k,)
                h = torch.tensordot(w, xs, dims=1)  # (B, C, H, W)
            if v == tap:
                tapped = h
            outs[v] = node(h, drop_prob) if isinstance(node, DAG) else node(h)
            for u in self.preds[v]:
                if self.last_use[u] == v:
                    del outs[u]
        ys = torch.stack([self.adapt(outs[o], o, "out") for o in self.outputs])  # (n_out, B, C, H, W)
        return ys.mean(0) if tap is None else (ys.mean(0), tapped)


class Network(ScheduledDropPath, nn.Module):
    """Stem -> top-level DAG of cells (stages of widths C, 2C, 4C) -> head, wired as NAGO's
    released code wires them. A cell reads its inputs at the width of its last (highest-id, so
    latest-stage) input, or the stem's C; its other inputs of another width are projected to that by
    a 1x1 conv; its first units convert it to the cell's own width. Every input is average-pooled to
    the cell's resolution (NAGO pools adaptively: the same wherever the size divides, as it does for
    every data set here). The output cells are pooled to the last stage, projected to its width
    where theirs differs, and averaged.

    Options for training, as NAGO's layer.py can attach them (its search attaches neither):
    auxiliary  NAGO's auxiliary head on the input of the first cell of the third stage (about 2/3 of
               the depth under the even rule; the nago rule gives only networks of 3 cells a third
               stage, and the others none, as in NAGO). Training mode then returns (logits,
               aux_logits), like the DARTS teacher.
    drop path  on the inputs of every operation unit with several inputs, as NAGO's OpNode places
               it. Interpretation: DARTS's drop path (per sample, survivors scaled by 1 / (1 - p),
               training only), ramped by train.fit through `drop_path_prob`. NAGO drops whole inputs
               for the batch, keeps one, does not rescale, and as released never drops (OpNode is
               built without the probability and keeps every input in training mode)."""

    def __init__(self, arch, auxiliary=False, drop_path_prob=0.0):
        super().__init__()
        self.init_drop_path(drop_path_prob or None)  # None: no drop path, and train.fit ramps none
        c, ratios, top = arch["width"], arch["stage_ratios"], arch["top"]
        stages = [cell["stage"] for cell in arch["cells"]]
        widths = [c * ratios[s] for s in stages]  # the last cell is in the last stage
        preds = [[u for u, w in top["edges"] if w == v] for v in range(top["nodes"])]
        reads = [widths[max(p)] if p else c for p in preds]
        projected = {(u, v) for u, v in top["edges"] if len(preds[v]) > 1 and widths[u] != reads[v]}
        edges = {(u, v): edge(2 ** (stages[v] - stages[u]), widths[u], reads[v] if (u, v) in projected else None)
                 for u, v in top["edges"]}
        edges.update({("in", v): edge(2 ** stages[v], c) for v in top["inputs"]})
        edges.update({(o, "out"): edge(2 ** (stages[-1] - stages[o]), widths[o],
                                       widths[-1] if widths[o] != widths[-1] else None) for o in top["outputs"]})
        self.stem = stem(c, arch["image_size"])
        self.cells = DAG(top, [cell_module(*args) for args in zip(arch["cells"], reads, widths)], edges, projected)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(widths[-1], HEAD_WIDTH, 1, bias=False),
                                  nn.BatchNorm2d(HEAD_WIDTH), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Dropout(0.2), nn.Linear(HEAD_WIDTH, arch["num_classes"]))
        initialise(self)
        # built last, so that the rest draws the same initial weights with and without it
        self.aux_cell = stages.index(2) if auxiliary and 2 in stages else None
        self.auxiliary_head = (None if self.aux_cell is None else
                               initialise(AuxiliaryHead(reads[self.aux_cell], arch["num_classes"])))

    def forward(self, x):  # (B, 3, H, W) -> (B, num_classes), or (logits, aux_logits) each (B, num_classes)
        drop_prob = self._drop_path_prob if self.training and self.drop_path_prob is not None else None
        if not self.training or self.auxiliary_head is None:
            return self.head(self.cells(self.stem(x), drop_prob))
        y, tapped = self.cells(self.stem(x), drop_prob, tap=self.aux_cell)
        return self.head(y), self.auxiliary_head(tapped)


class AuxiliaryHead(DARTSAuxiliaryHead):
    """NAGO's auxiliary classifier (zeus/networks/pytorch/heads/auxiliary_head.py): ReLU, average
    pool to 2x2 in non-overlapping windows (4x4 at 8 px, 7x7 at 14 px), then DARTS's layers (1x1
    conv to 128, BN, ReLU, 2x2 conv to 768, BN, ReLU, linear); DARTS pools 8 px in overlapping 5x5
    windows at stride 3. Its parameters are for training only: not counted in the limit."""

    def forward(self, x):  # (B, c, H, W)
        x = F.adaptive_avg_pool2d(F.relu(x), 2)  # (B, c, 2, 2)
        return self.classifier(self.features(x).flatten(1))  # (B, 768) -> (B, num_classes)


def cell_module(cell, c_in, c):
    """A cell of width c that reads width c_in: the input units of its input modules convert it."""
    graph = cell["graph"]
    return DAG(graph, [DAG(m, [unit(c_in if i in graph["inputs"] and u in m["inputs"] else c, c)
                               for u in range(m["nodes"])], drop_inputs=True)
                       for i, m in enumerate(cell["modules"])])


def initialise(module):
    """NAGO's initialisation: every conv Kaiming-normal (fan_out, ReLU gain); BatchNorm (weight 1,
    bias 0), the classifier and conv biases keep PyTorch's. (PyTorch's own conv init is 2.4 times
    smaller.)"""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return module


def build(arch, auxiliary=False, drop_path_prob=0.0):
    """The torch.nn.Module of an architecture sampled by `sample` (or loaded from its JSON), with
    NAGO's initialisation (initialise). auxiliary, drop_path_prob: training options (Network), off
    by default. The auxiliary head's parameters are not counted in arch["params"] nor the limit, as
    NAGO and DARTS leave it out of the reported size (profile leaves it out too); drop path has none."""
    if not 0.0 <= drop_path_prob < 1.0:
        raise ValueError(f"drop_path_prob must be in [0, 1), not {drop_path_prob}")
    return Network(arch, auxiliary, drop_path_prob)


# ----------------------------------------------------------------------------------------------
# Profile: parameters, MACs and activation memory per sample (the paper's Fig. 6 axis)

class LiveTensorBytes(TorchDispatchMode):
    """An exact account of the tensor bytes alive during a forward pass: every tensor an operation
    returns is counted once per storage from its creation until its last Python reference dies
    (weakref.finalize); storages that existed before (weights, the input) are not counted."""

    def __init__(self, existing):
        super().__init__()
        self.existing = {t.untyped_storage().data_ptr() for t in existing}
        self.refs, self.live, self.peak = {}, 0, 0

    def release(self, ptr, nbytes):
        self.refs[ptr] -= 1
        if self.refs[ptr] == 0:
            del self.refs[ptr]
            self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.untyped_storage().data_ptr() in self.existing:
                continue
            ptr, nbytes = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
            if ptr not in self.refs:
                self.refs[ptr] = 0
                self.live += nbytes
                self.peak = max(self.peak, self.live)
            self.refs[ptr] += 1
            weakref.finalize(t, self.release, ptr, nbytes)
        return out


def profile(model, image_size, device="cpu", batch_size=8):
    """Parameters used for inference (counted by name without a training-only auxiliary head, as
    DARTS does), MACs per image (torch's FLOP counter: a multiply-add is 2 FLOPs) and peak activation
    memory per image for inference (MiB) as an exact account of live tensor bytes (LiveTensorBytes),
    the same on every device: CUDA's allocator statistics would also count the other students that
    share the GPU, and the allocator's rounding. The input batch itself is not counted."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    x = torch.zeros(batch_size, 3, image_size, image_size, device=device)
    params = sum(p.numel() for name, p in model.named_parameters() if "auxiliary" not in name)
    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            model(x[:1])
        macs = counter.get_total_flops() // 2
        counter = LiveTensorBytes([x, *model.parameters(), *model.buffers()])
        with counter:
            model(x)
        peak = counter.peak
    model.train(was_training)
    return {"params": params, "macs": int(macs), "memory_mb": peak / batch_size / 2**20}


# ----------------------------------------------------------------------------------------------
# Drawing (paper Fig. 5)

def draw(arch, path):
    """Draw the three levels like the paper's Fig. 5: the top-level graph of cells (coloured by
    stage), the first cell's graph of modules, and that cell's first module's graph of units.
    Input nodes are yellow, output nodes blue, the rest grey; arrows show the information flow."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--draw needs matplotlib: pip install matplotlib") from None
    cell = arch["cells"][0]
    panels = [("top: cells (stages 0/1/2)", arch["top"], [c["stage"] for c in arch["cells"]]),
              ("mid: modules of cell 0", cell["graph"], None),
              ("bottom: units of module 0", cell["modules"][0], None)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, (title, graph, stages) in zip(axes, panels):
        g = nx.DiGraph()
        g.add_nodes_from(range(graph["nodes"]))  # in id order: the colours follow it
        g.add_edges_from(map(tuple, graph["edges"]))
        for layer, nodes in enumerate(nx.topological_generations(g)):  # left to right by depth
            g.add_nodes_from(nodes, layer=layer)
        colors = ([["#f4d35e", "#ee964b", "#f95738"][s] for s in stages] if stages is not None else
                  ["#f4d35e" if v in graph["inputs"] else "#5fa8d3" if v in graph["outputs"] else "#bbbbbb" for v in g])
        nx.draw_networkx(g, nx.multipartite_layout(g, subset_key="layer"), ax=ax, node_color=colors, arrows=True,
                         node_size=400, font_size=8)
        ax.set_title(title)
        ax.axis("off")
    t = arch["theta"]
    fig.suptitle(f"seed {arch['seed']}, width {arch['width']}, {arch['params'] / 1e6:.2f} M params, "
                 + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in t.items()),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Command line

def read_theta(text):
    """θ from --theta: inline JSON or a file; a best.json from search.py carries it (with τ and α,
    which the generator does not use) under "config"."""
    value = schema.read_json(text, "θ", "--theta")
    return {k: v for k, v in value.get("config", value).items() if k not in ("tau", "alpha")}


def summary(arch, model, seconds):
    """The printed summary of one architecture."""
    top = arch["top"]
    mids = [c["graph"] for c in arch["cells"]]
    bottoms = [m for c in arch["cells"] for m in c["modules"]]
    stats = profile(model, arch["image_size"])
    used = sorted({c["stage"] for c in arch["cells"]})
    lines = [
        f"top     {top['nodes']} cells, {len(top['edges'])} edges, stages "
        f"{[sum(c['stage'] == s for c in arch['cells']) for s in range(3)]} ({stages_rule(arch)} rule)",
        f"mid     {sum(g['nodes'] for g in mids)} modules, {sum(len(g['edges']) for g in mids)} edges",
        f"bottom  {sum(g['nodes'] for g in bottoms)} units, {sum(len(g['edges']) for g in bottoms)} edges",
        f"width   C = {arch['width']} (stages {', '.join(str(arch['width'] * arch['stage_ratios'][s]) for s in used)})",
        f"params  {stats['params']:,} (limit {arch['max_params']:,})",
        f"MACs    {stats['macs'] / 1e6:,.1f} M per {arch['image_size']} px image",
        f"memory  {stats['memory_mb']:.2f} MiB activations per image (inference, CPU)",
        f"built   in {seconds:.2f} s",
    ]
    return "\n".join(lines)


@cli.cli
def main(argv=None):
    parser = cli.Parser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--theta", help="θ as inline JSON or a JSON file (a best.json from search.py works too)")
    source.add_argument("--arch", help="an architecture JSON written by --save, to summarise or draw again")
    parser.add_argument("--seed", type=cli.seed, default=0, help="architecture seed: (θ, seed) fixes the network")
    parser.add_argument("--image-size", type=cli.whole(1, 1024), default=32,
                        help="input resolution (32 for CIFAR, 224 for MIT67)")
    parser.add_argument("--num-classes", type=cli.whole(1, 100_000), default=10, help="classes of the data set")
    parser.add_argument("--max-params", type=cli.max_params, default=None,
                        help="parameter limit (default: 4.0e6 below 40 px, 6.0e6 above, paper Sec. 4)")
    parser.add_argument("--stages", choices=STAGE_RULES, default=None,
                        help="how the cells are split into stages: even (default; three stages of as near "
                             "equal size, an interpretation) or nago (NAGO's released rule: one stage at full "
                             "resolution unless there are exactly 3 cells)")
    parser.add_argument("--width-multiple", type=cli.positive_int, default=None,
                        help="round the base width down to a multiple of this (8: channels that suit bf16 tensor "
                             "cores, at some of the parameters the limit allows; default 1, the paper's widest fit)")
    parser.add_argument("--save", help="write the architecture data to this JSON file")
    parser.add_argument("--draw", help="draw the three graph levels to this image file (needs matplotlib)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.arch:
        if args.stages or args.width_multiple:
            raise cli.UserError("--stages and --width-multiple apply to --theta; an --arch file keeps the rule and "
                                "width it was sampled with")
        arch = files.read_json(args.arch, "--arch")
        if not isinstance(arch, dict) or not {"top", "cells", "width"} <= set(arch):
            raise cli.UserError(f"{args.arch} is not an architecture file written by generator.py --save.")
    else:
        if args.image_size < 8 or args.num_classes < 2:
            raise cli.UserError("--image-size must be at least 8 and --num-classes at least 2.")
        arch = sample(read_theta(args.theta), args.seed, args.image_size, args.num_classes, args.max_params,
                      stages=args.stages or "even", width_multiple=args.width_multiple or 1)
    model = build(arch)
    print(summary(arch, model, time.perf_counter() - start))
    if args.save:
        files.write_json(args.save, arch)
        print(f"saved   {args.save}")
    if args.draw:
        draw(arch, args.draw)
        print(f"drawn   {args.draw}")


if __name__ == "__main__":
    sys.exit(main())
