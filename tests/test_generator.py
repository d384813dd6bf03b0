"""generator.py against independent references: networkx's DAG algorithms and rings, hand-computed
sums, sizes and MACs, parameter counts by hand from NAGO's construction rules, Kaiming's formula, a
second Python process, and the real module's own parameter count."""

import itertools
import json
import os
import shlex
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import generator as G  # noqa: E402
from helpers import DOCS, documented_block  # noqa: E402

MIN = {k: lo for k, (_, lo, _) in G.SPACE.items()}
MAX = {k: hi for k, (_, _, hi) in G.SPACE.items()}
MID = {"top_nodes": 6, "top_k": 4, "top_p": 0.5, "mid_nodes": 4, "mid_p": 0.6,
       "bottom_nodes": 4, "bottom_k": 2, "bottom_p": 0.5}


def random_theta(rng):
    return {k: int(rng.integers(lo, hi + 1)) if kind is int else float(rng.uniform(lo, hi))
            for k, (kind, lo, hi) in G.SPACE.items()}


def corners():
    """All 2^8 corners of the box: the released NAGO code fails on some draws (it gives up after 30
    disconnected Erdős-Rényi graphs, which happens to 7 % of cells of 4 modules at p = 0.2)."""
    for bits in itertools.product((0, 1), repeat=len(G.SPACE)):
        yield {k: (MAX if b else MIN)[k] for k, b in zip(G.SPACE, bits)}


def all_graphs(arch):
    yield arch["top"]
    for cell in arch["cells"]:
        yield cell["graph"]
        yield from cell["modules"]


def check_dag(graph):
    """Independent check with networkx: acyclic, edges point up, inputs / outputs are exactly the
    nodes without predecessors / successors, every node is reached from an input and reaches an output."""
    g = nx.DiGraph()
    g.add_nodes_from(range(graph["nodes"]))
    g.add_edges_from(map(tuple, graph["edges"]))
    assert nx.is_directed_acyclic_graph(g)
    assert all(u < v for u, v in g.edges())
    assert nx.is_connected(g.to_undirected())
    assert sorted(graph["inputs"]) == sorted(v for v in g if g.in_degree(v) == 0)
    assert sorted(graph["outputs"]) == sorted(v for v in g if g.out_degree(v) == 0)
    for v in g:
        assert v in graph["inputs"] or nx.ancestors(g, v) & set(graph["inputs"])
        assert v in graph["outputs"] or nx.descendants(g, v) & set(graph["outputs"])


# ---------------------------------------------------------------------------------------------- graphs

def test_every_corner_draws_valid_dags_without_building():
    """Graph draws alone (no width search) for all 256 corners and 3 seeds each."""
    for theta in corners():
        for seed in range(3):
            top = G.to_dag(G.random_graph("ws", theta["top_nodes"], seed, (0,), theta["top_k"], theta["top_p"]))
            mid = G.to_dag(G.random_graph("er", theta["mid_nodes"], seed, (1, 0), p=theta["mid_p"]))
            bottom = G.to_dag(G.random_graph("ws", theta["bottom_nodes"], seed, (2, 0, 0),
                                             theta["bottom_k"], theta["bottom_p"]))
            for graph, n in ((top, theta["top_nodes"]), (mid, theta["mid_nodes"]), (bottom, theta["bottom_nodes"])):
                assert graph["nodes"] == n
                check_dag(graph)


@pytest.mark.parametrize("k", [4, 5])
def test_watts_strogatz_k_above_the_nodes_builds_networkx_ring_not_the_complete_graph(k):
    """NAGO clips k to n - 1: with 4 nodes, k = 4 or 5 is networkx's ring of k = 3 (one neighbour per
    side, 4 edges; rewiring moves edges but keeps their number), not K4's 6 edges."""
    ring = nx.watts_strogatz_graph(4, 3, 0)
    assert ring.number_of_edges() == 4 and nx.complete_graph(4).number_of_edges() == 6
    assert set(G.random_graph("ws", 4, 0, (0,), k, 0.0).edges()) == set(ring.edges())  # p = 0: the ring itself
    for seed in range(20):
        for p in (0.1, 0.5, 1.0):
            assert G.random_graph("ws", 4, seed, (0,), k, p).number_of_edges() == ring.number_of_edges()


@pytest.mark.slow
@pytest.mark.parametrize("image_size,limit", [(32, 4.0e6), (224, 6.0e6)])
def test_random_thetas_meet_the_parameter_limit_exactly(image_size, limit):
    rng = np.random.default_rng(image_size)
    thetas = [MIN, MAX, MID] + [random_theta(rng) for _ in range(12)]
    for i, theta in enumerate(thetas):
        arch = G.sample(theta, seed=i, image_size=image_size, num_classes=10)
        for graph in all_graphs(arch):
            check_dag(graph)
        assert arch["max_params"] == limit
        real = sum(p.numel() for p in G.build(arch).parameters())  # the real module, not the formula
        assert arch["params"] == real <= limit
        # the largest width: one more channel breaks the limit (counted on a real build at width + 1)
        wider = sum(p.numel() for p in G.build({**arch, "width": arch["width"] + 1}).parameters())
        assert wider > limit


def test_an_aligned_width_is_the_largest_multiple_that_fits():
    """width_multiple=8: the widest multiple of 8 within the limit (the next one breaks it), recorded in
    the architecture; the graphs are the unaligned sample's."""
    for theta in (MIN, MID):
        exact = G.sample(theta, 0)
        arch = G.sample(theta, 0, width_multiple=8)
        assert arch["width"] % 8 == 0 and arch["width_multiple"] == 8 and exact["width_multiple"] == 1
        assert arch["width"] == exact["width"] // 8 * 8 and arch["cells"] == exact["cells"]
        assert arch["params"] == G.count_params(arch, arch["width"]) <= arch["max_params"]
        assert G.count_params(arch, arch["width"] + 8) > arch["max_params"]
    with pytest.raises(ValueError, match="no multiple of 64 fits"):
        G.sample(MIN, 0, max_params=1e5, width_multiple=64)


def test_stages_split_cells_evenly_and_consecutively():
    assert G.stages_of(3) == [0, 1, 2]
    assert G.stages_of(10) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert G.stages_of(8) == [0, 0, 0, 1, 1, 1, 2, 2]


@pytest.mark.slow
def test_same_theta_and_seed_give_the_same_architecture_in_another_process():
    arch = G.sample(MID, seed=7)
    code = ("import json, sys; sys.path.insert(0, %r); import generator as G; "
            "print(json.dumps(G.sample(json.loads(sys.argv[1]), 7)))" % ROOT)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(MID)], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert json.loads(out) == json.loads(json.dumps(arch))


def test_different_seeds_give_different_graphs():
    graphs = {json.dumps([a["top"], [c["graph"] for c in a["cells"]], [c["modules"] for c in a["cells"]]])
              for a in (G.sample(MID, seed=s) for s in range(5))}
    assert len(graphs) == 5


def same_network(a, b, size=16):
    """Built from the same torch seed, do a and b compute the same function, bit for bit?"""
    torch.manual_seed(0)
    a = G.build(a).eval()
    torch.manual_seed(0)
    b = G.build(b).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return torch.equal(a(x), b(x))


@pytest.mark.slow
@pytest.mark.parametrize("theta,stages", [(MIN, "even"), ({**MIN, "top_nodes": 5}, "nago")])
def test_architecture_json_round_trip_rebuilds_the_same_network(theta, stages):
    arch = G.sample(theta, seed=3, stages=stages)
    loaded = json.loads(json.dumps(arch))
    assert G.stages_rule(loaded) == stages
    assert same_network(arch, loaded)


@pytest.mark.slow
def test_an_architecture_file_without_a_stage_rule_is_an_even_split():
    """Files written before the rule was recorded hold no "stages_rule": they were even splits."""
    arch = G.sample({**MIN, "top_nodes": 5}, seed=3)
    old = {k: v for k, v in json.loads(json.dumps(arch)).items() if k != "stages_rule"}
    assert G.stages_rule(old) == "even"
    assert same_network(arch, old)
    assert not same_network(G.sample({**MIN, "top_nodes": 5}, seed=3, stages="nago"), old)


# ---------------------------------------------------------------------------------------------- modules

@pytest.mark.parametrize("theta,image_size,classes", [(MIN, 32, 10), (MAX, 32, 100), (MID, 32, 10),
                                                      (MIN, 224, 67), (MID, 224, 67)])
@pytest.mark.slow
def test_forward_backward_shapes_and_every_parameter_gets_a_gradient(theta, image_size, classes):
    model = G.build(G.sample(theta, seed=1, image_size=image_size, num_classes=classes))
    x = torch.randn(2, 3, image_size, image_size)
    y = model(x)
    assert y.shape == (2, classes)
    y.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.slow
def test_random_thetas_run_forward_and_backward():
    rng = np.random.default_rng(0)
    for i in range(4):  # 16 px inputs keep it quick: the graphs and the widths are those of 32 px
        model = G.build(G.sample(random_theta(rng), seed=i))
        y = model(torch.randn(2, 3, 16, 16))
        assert y.shape == (2, 10)
        y.logsumexp(1).mean().backward()


def test_weighted_sum_of_inputs_matches_a_hand_computation():
    """Node 2 of 0->2, 1->2 sums its inputs with sigmoid(w); 0 and 1 are input nodes; 2 the output."""
    graph = {"nodes": 3, "edges": [[0, 2], [1, 2]], "inputs": [0, 1], "outputs": [2]}
    scale = [nn.Identity(), nn.Identity(), nn.Identity()]
    dag = G.DAG(graph, scale)
    with torch.no_grad():
        dag.edge_w["2"].copy_(torch.tensor([0.3, -1.2]))
    x = torch.randn(2, 4, 5, 5)
    s = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    expected = s(0.3) * x + s(-1.2) * x
    assert torch.allclose(dag(x), expected.float(), atol=1e-6)


def test_output_nodes_are_averaged():
    graph = {"nodes": 3, "edges": [[0, 1], [0, 2]], "inputs": [0], "outputs": [1, 2]}

    class Times(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            return self.k * x

    dag = G.DAG(graph, [Times(2.0), Times(3.0), Times(5.0)])
    x = torch.randn(1, 2, 3, 3)
    assert torch.allclose(dag(x), (6 * x + 10 * x) / 2)


def test_cells_of_later_stages_run_at_lower_resolution_and_larger_width():
    """Cells of a later stage run at half the resolution and twice the width of the stage before."""
    arch = G.sample(MIN, seed=0)
    model = G.build(arch)
    sizes = []
    for cell in model.cells.nodes:
        cell.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    model(torch.randn(1, 3, 32, 32))
    c = arch["width"]
    assert sizes == [(c, 32, 32), (2 * c, 16, 16), (4 * c, 8, 8)]


def one_unit_cells(top, stages, width=4, image_size=16):
    """A hand-made architecture: each cell is one module of one unit."""
    single = {"nodes": 1, "edges": [], "inputs": [0], "outputs": [0]}
    return {"width": width, "stage_ratios": [1, 2, 4], "image_size": image_size, "num_classes": 3, "top": top,
            "cells": [{"graph": single, "modules": [single], "stage": s} for s in stages]}


def test_a_cell_with_inputs_of_two_widths_merges_them_as_nago_does():
    """Cells 0 -> 1 -> 2 and 0 -> 2, in stages 0, 1, 2 (widths 4, 8, 16). Cell 2 reads at the width of
    its last input, cell 1's 8: cell 0's output is pooled 4x and projected 4 -> 8 by a 1x1 conv with a
    bias, and summed without a weight; cell 1's is pooled 2x and weighted by sigmoid(w). Cell 2's
    unit converts 8 -> 16, cell 1's 4 -> 8; nothing else has a 1x1 conv."""
    top = {"nodes": 3, "edges": [[0, 1], [0, 2], [1, 2]], "inputs": [0], "outputs": [2]}
    model = G.build(one_unit_cells(top, [0, 1, 2])).eval()
    units = [cell.nodes[0].nodes[0][1] for cell in model.cells.nodes]
    assert [(u.in_channels, u.out_channels) for u in units] == [(4, 4), (4, 8), (8, 16)]
    pool, project = model.cells.edges["0->2"]
    assert pool.kernel_size == 4 and (project.in_channels, project.out_channels, project.kernel_size) == (4, 8, (1, 1))
    assert project.bias is not None
    for key in ("0->1", "1->2"):  # pooling only
        assert [type(m) for m in model.cells.edges[key]] == [nn.AvgPool2d] and model.cells.edges[key][0].kernel_size == 2
    assert list(model.cells.edge_w) == ["2"] and model.cells.edge_w["2"].numel() == 1  # one weighted input
    with torch.no_grad():
        model.cells.edge_w["2"].fill_(-0.7)
    seen = {}
    for i, cell in enumerate(model.cells.nodes):
        cell.register_forward_hook(lambda m, inp, out, i=i: seen.update({i: (inp[0], out)}))
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 16))
        pool = torch.nn.functional.avg_pool2d
        expected = project(pool(seen[0][1], 4)) + torch.sigmoid(torch.tensor(-0.7)) * pool(seen[1][1], 2)
    assert torch.allclose(seen[2][0], expected, atol=1e-6)


def nago_param_count(arch):
    """NAGO's network counted by hand from the graphs, following its released layer.py (SUM merges,
    3x3 units), without the conv biases that a BatchNorm cancels: a unit is 9·c_in·c + 2c; a node with
    k > 1 inputs has k sigmoid weights, except where a cell's input of another width than its last
    input's gets a 1x1 conv with a bias instead; output cells of a narrower stage get the same."""
    c, classes = arch["width"], arch["num_classes"]
    widths = [c * (1, 2, 4)[cell["stage"]] for cell in arch["cells"]]
    top = arch["top"]

    def preds(graph, v):
        return [u for u, w in graph["edges"] if w == v]

    if arch["image_size"] < 40:  # two full 3x3 convs and their BatchNorms
        total = 27 * c + 2 * c + 9 * c * c + 2 * c
    else:  # separable 3 -> c//2 (depthwise 27, pointwise 3·c//2), BN, separable c//2 -> c, BN
        h = c // 2
        total = 27 + 3 * h + 2 * h + 9 * h + h * c + 2 * c
    for v, cell in enumerate(arch["cells"]):
        p = preds(top, v)
        reads = widths[max(p)] if p else c
        if len(p) > 1:
            total += sum(widths[u] * reads + reads if widths[u] != reads else 1 for u in p)
        graph = cell["graph"]
        for i, module in enumerate(cell["modules"]):
            total += len(preds(graph, i)) if len(preds(graph, i)) > 1 else 0
            for u in range(module["nodes"]):
                total += len(preds(module, u)) if len(preds(module, u)) > 1 else 0
                c_in = reads if i in graph["inputs"] and u in module["inputs"] else widths[v]
                total += 9 * c_in * widths[v] + 2 * widths[v]
    if len(top["outputs"]) > 1:
        total += sum(widths[o] * widths[-1] + widths[-1] for o in top["outputs"] if widths[o] != widths[-1])
    return total + widths[-1] * 1280 + 2 * 1280 + 1280 * classes + classes


def hand_macs(arch):
    """MACs per image at 32 px by hand from the graphs, as torch's FLOP counter counts them (convs,
    the weighted sums' products, the linear layer; not BatchNorm, pooling, biases): a unit is
    9·c_in·c·r² at its cell's resolution r = 32 / 2^stage; a node of k > 1 inputs costs k·c·r²,
    plus a 1x1 conv c_u·c·r² per input of another width (top level); the stem 27·C + 9·C² at 32²;
    the head width·1280 at the last stage's r², then 1280 per class."""
    c, size = arch["width"], arch["image_size"]
    widths = [c * (1, 2, 4)[cell["stage"]] for cell in arch["cells"]]
    areas = [(size // 2 ** cell["stage"]) ** 2 for cell in arch["cells"]]
    top = arch["top"]

    def preds(graph, v):
        return [u for u, w in graph["edges"] if w == v]

    def sums(graph, width):
        return sum(len(preds(graph, v)) * width for v in range(graph["nodes"]) if len(preds(graph, v)) > 1)

    total = (27 * c + 9 * c * c) * size ** 2
    for v, cell in enumerate(arch["cells"]):
        p = preds(top, v)
        reads = widths[max(p)] if p else c
        if len(p) > 1:
            total += areas[v] * (len(p) * reads + sum(widths[u] * reads for u in p if widths[u] != reads))
        graph = cell["graph"]
        total += areas[v] * sums(graph, widths[v])
        for i, module in enumerate(cell["modules"]):
            total += areas[v] * sums(module, widths[v])
            for u in range(module["nodes"]):
                c_in = reads if i in graph["inputs"] and u in module["inputs"] else widths[v]
                total += areas[v] * 9 * c_in * widths[v]
    if len(top["outputs"]) > 1:
        total += areas[-1] * sum(widths[o] * widths[-1] for o in top["outputs"] if widths[o] != widths[-1])
    return total + areas[-1] * widths[-1] * 1280 + 1280 * arch["num_classes"]


@pytest.mark.slow
@pytest.mark.parametrize("image_size", [32, 224])
def test_parameter_count_equals_nagos_construction_counted_by_hand(image_size):
    rng = np.random.default_rng(5)
    for i, theta in enumerate([MIN, MID] + [random_theta(rng) for _ in range(3)]):
        arch = G.sample(theta, seed=i, image_size=image_size, num_classes=10)
        with torch.device("meta"):
            model = G.build(arch)
        assert sum(p.numel() for p in model.parameters()) == nago_param_count(arch)


def test_large_image_stem_is_nagos_separable_stem():
    """NAGO's 224 px stem (layer.py): separable conv 3 -> C/2 stride 2, BN, then a ReLU-separable
    conv-BN unit C/2 -> C stride 2; built here as NAGO writes it, with biases, the count is ours plus
    the four conv biases that the BatchNorms cancel; a quarter of the resolution comes out."""
    c = 31
    sep = lambda i, o: nn.Sequential(nn.Conv2d(i, i, 3, 2, 1, groups=i), nn.Conv2d(i, o, 1))  # noqa: E731
    nago = nn.Sequential(sep(3, c // 2), nn.BatchNorm2d(c // 2), nn.ReLU(), sep(c // 2, c), nn.BatchNorm2d(c))
    biases = sum(m.bias.numel() for m in nago.modules() if isinstance(m, nn.Conv2d))
    ours = G.stem(c, 224)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in nago.parameters()) - biases
    assert ours(torch.randn(1, 3, 224, 224)).shape == (1, c, 56, 56)
    full = 27 * c + 9 * c * c  # the two full 3x3 convs of the stem this replaced: ten times as many weights
    assert full > 10 * sum(p.numel() for p in ours.parameters())


def test_initial_weights_follow_kaimings_fan_out_formula():
    """NAGO initialises every conv Kaiming-normal (fan_out, ReLU): std = sqrt(2 / (c_out · k · k)),
    normal, mean 0; BatchNorm starts at weight 1, bias 0. Tested on the pooled 3x3 unit weights of
    the first stage (185,625 values: at 3 sigma the sample std is within 0.5 % of its expectation)."""
    torch.manual_seed(0)
    arch = G.sample(MID, seed=0)
    model = G.build(arch)
    c = arch["width"]
    weights = torch.cat([m.weight.flatten() for m in model.modules()
                         if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.weight.shape[:2] == (c, c)])
    n = weights.numel()
    assert n > 100_000
    std = np.sqrt(2 / (c * 9))
    assert abs(weights.std().item() / std - 1) < 3 / np.sqrt(2 * n)
    assert abs(weights.mean().item()) < 4 * std / np.sqrt(n)
    kurtosis = ((weights - weights.mean()) ** 4).mean().item() / weights.var().item() ** 2
    assert abs(kurtosis - 3) < 0.1  # a normal's; PyTorch's default (uniform) has 1.8
    head = model.head[1].weight
    assert abs(head.std().item() / np.sqrt(2 / 1280) - 1) < 3 / np.sqrt(2 * head.numel())
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))


# ---------------------------------------------------------------------------------------------- stage rules

def test_nago_rule_is_get_stage_list_with_stage_ratios_of_one():
    """NAGO's get_stage_list by hand: 3 cells take a stage each; for n > 3 the first threshold is
    1.0 · n, which no cell index 0..n-1 reaches, so every cell stays in stage 0."""
    assert G.stages_of(3, "nago") == [0, 1, 2]
    for n in range(4, 11):
        assert G.stages_of(n, "nago") == [0] * n


@pytest.mark.slow
def test_nago_rule_by_hand_for_a_four_cell_network():
    """4 cells under NAGO's rule: one stage, so every cell runs at width C and 32 px; the parameters
    and the MACs counted by hand from the graphs (nago_param_count, hand_macs) are the module's."""
    arch = G.sample({**MIN, "top_nodes": 4}, seed=0, stages="nago")
    assert [cell["stage"] for cell in arch["cells"]] == [0, 0, 0, 0]
    model = G.build(arch)
    sizes = []
    for cell in model.cells.nodes:
        cell.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    stats = G.profile(model, 32, batch_size=1)
    c = arch["width"]
    assert sizes[:4] == [(c, 32, 32)] * 4
    assert stats["params"] == arch["params"] == nago_param_count(arch)
    assert stats["macs"] == hand_macs(arch)


@pytest.mark.slow
@pytest.mark.parametrize("stages", G.STAGE_RULES)
def test_macs_equal_a_hand_count_from_the_graphs(stages):
    for i, theta in enumerate([MIN, MID]):
        arch = G.sample(theta, seed=i, stages=stages)
        assert G.profile(G.build(arch), 32, batch_size=1)["macs"] == hand_macs(arch)


def test_nago_rule_meets_the_parameter_limit_exactly():
    rng = np.random.default_rng(1)
    for i, theta in enumerate([{**MIN, "top_nodes": 4}, MID, random_theta(rng)]):
        arch = G.sample(theta, seed=i, stages="nago")
        assert arch["params"] == G.count_params(arch, arch["width"]) <= arch["max_params"]
        assert G.count_params(arch, arch["width"] + 1) > arch["max_params"]


def test_unknown_stage_rule_is_refused():
    with pytest.raises(ValueError, match="choose one of even, nago"):
        G.sample(MIN, 0, stages="three")


# ---------------------------------------------------------------------------------------------- training options

def without_dropout(model):
    """Train mode (batch statistics, drop path) without the head's dropout, so that only drop path draws."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    return model


@pytest.mark.slow
def test_auxiliary_head_gives_logits_in_training_and_is_left_out_in_eval():
    arch = G.sample(MIN, seed=0, num_classes=7)
    model = G.build(arch, auxiliary=True)
    logits, aux = model.train()(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 7)
    (logits.sum() + aux.sum()).backward()
    assert all(p.grad is not None for p in model.auxiliary_head.parameters())
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_auxiliary_head_reads_the_input_of_the_first_cell_of_the_third_stage():
    """Cells 0 -> 1 -> 2 and 0 -> 2 in stages 0, 1, 2 (widths 4, 8, 16, 16 px): NAGO's head reads
    what cell 2 receives, 8 channels (cell 1's width) at 4 px, pooled to 2x2."""
    top = {"nodes": 3, "edges": [[0, 1], [0, 2], [1, 2]], "inputs": [0], "outputs": [2]}
    model = G.build(one_unit_cells(top, [0, 1, 2]), auxiliary=True).train()
    assert model.auxiliary_head.features[0].in_channels == 8
    seen = {}
    model.cells.nodes[2].register_forward_hook(lambda m, inp, out: seen.update(cell=inp[0]))
    model.auxiliary_head.register_forward_hook(lambda m, inp, out: seen.update(aux=inp[0]))
    model(torch.randn(2, 3, 16, 16))
    assert seen["cell"].shape == (2, 8, 4, 4) and torch.equal(seen["aux"], seen["cell"])


def test_auxiliary_head_is_not_counted_in_the_parameter_limit():
    """As NAGO and DARTS report sizes: arch["params"] and profile leave the head out; the module has
    c·128 + 2·128 (1x1 conv, BN) + 128·768·4 + 2·768 (2x2 conv, BN) + 768·K + K (linear) more,
    where c is the width the first stage-2 cell reads."""
    arch = G.sample(MID, seed=0)
    model = G.build(arch, auxiliary=True)
    c, k = model.auxiliary_head.features[0].in_channels, arch["num_classes"]
    assert c in (arch["width"] * 2, arch["width"] * 4)
    head = c * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * k + k
    assert sum(p.numel() for p in model.parameters()) == arch["params"] + head
    assert G.profile(model, 32, batch_size=1)["params"] == arch["params"] <= arch["max_params"]


def test_nago_rule_above_three_cells_has_no_third_stage_and_so_no_auxiliary_head():
    model = G.build(G.sample({**MIN, "top_nodes": 4}, seed=0, stages="nago"), auxiliary=True)
    assert model.auxiliary_head is None
    assert model.train()(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert G.build(G.sample(MIN, seed=0, stages="nago"), auxiliary=True).auxiliary_head is not None


@pytest.mark.slow
def test_training_options_off_leave_the_network_as_it_was():
    """Off (the default): no drop path for train.fit to ramp, no head, the same weights and outputs;
    on, the network's own weights and eval outputs are unchanged too (the head is built last)."""
    arch = G.sample(MIN, seed=1)
    plain = G.build(arch)
    assert plain.drop_path_prob is None and plain.auxiliary_head is None
    assert sum(p.numel() for p in plain.parameters()) == arch["params"]
    assert [name for name, _ in plain.named_buffers() if "drop" in name] == []
    torch.manual_seed(0)
    plain = G.build(arch).eval()
    torch.manual_seed(0)
    both = G.build(arch, auxiliary=True, drop_path_prob=0.3).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(plain(x), both(x))
        without_dropout(plain), without_dropout(both)
        both.drop_path_prob = 0.0  # train.fit's first epoch: every input kept
        assert torch.equal(plain(x), both(x)[0])


@pytest.mark.slow
def test_drop_path_is_stochastic_in_training_and_identity_in_eval():
    arch = G.sample(MIN, seed=1)
    model = G.build(arch, drop_path_prob=0.5)
    assert model.drop_path_prob == 0.5  # what train.fit reads as its maximum and ramps
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        a, b = without_dropout(model)(x), model(x)
        assert not torch.equal(a, b)
        model.eval()
        assert torch.equal(model(x), model(x))


def test_drop_path_drops_each_input_of_each_sample_on_its_own():
    """Node 2 of 0 -> 2, 1 -> 2 in a graph of units: each sample's sum is m0·s(w0)·x + m1·s(w1)·x,
    scaled by 1 / keep, with m0, m1 in {0, 1}; all four masks occur among 64 samples at p = 0.5.
    A DAG that is not a graph of units (a cell, the top level) drops nothing."""
    graph = {"nodes": 3, "edges": [[0, 2], [1, 2]], "inputs": [0, 1], "outputs": [2]}
    units = G.DAG(graph, [nn.Identity()] * 3, drop_inputs=True)
    torch.manual_seed(0)
    x = torch.randn(64, 2, 3, 3)
    s = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    options = [m0 * s(0.3) + m1 * s(-1.2) for m0 in (0, 1) for m1 in (0, 1)]
    with torch.no_grad():
        units.edge_w["2"].copy_(torch.tensor([0.3, -1.2]))
        y = units(x, torch.tensor(0.5))
    found = set()
    for i in range(64):
        matches = [j for j, o in enumerate(options) if torch.allclose(y[i], float(o / 0.5) * x[i], atol=1e-6)]
        assert len(matches) == 1
        found.update(matches)
    assert found == {0, 1, 2, 3}
    plain = G.DAG(graph, [nn.Identity()] * 3)
    with torch.no_grad():
        assert torch.equal(plain(x, torch.tensor(0.5)), plain(x))
    model = G.build(G.sample(MIN, seed=0))
    assert not model.cells.drop_inputs and not any(cell.drop_inputs for cell in model.cells.nodes)
    assert all(module.drop_inputs for cell in model.cells.nodes for module in cell.nodes)


# ---------------------------------------------------------------------------------------------- profile

def test_profile_counts_macs_and_memory_by_hand():
    """Conv 3->8 (3x3, 32 px) then a ReLU that is not in place: MACs = 32·32·8·3·9; at the ReLU both
    the conv output and its own output are alive, 2 · 8·32·32 float32 per image."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU())
    stats = G.profile(model, 32)
    assert stats["params"] == 8 * 3 * 9
    assert stats["macs"] == 32 * 32 * 8 * 3 * 9
    assert stats["memory_mb"] == pytest.approx(2 * 8 * 32 * 32 * 4 / 2**20)


# ---------------------------------------------------------------------------------------------- θ and CLI

@pytest.mark.parametrize("theta,fragment", [
    ("not a dict", "must be a JSON object"),
    ({**MID, "depth": 3}, "unknown key(s) depth"),
    ({k: v for k, v in MID.items() if k != "top_p"}, "missing key(s) top_p"),
    ({**MID, "top_nodes": 11}, "outside its range [3, 10]"),
    ({**MID, "top_nodes": 4.5}, "must be an integer"),
    ({**MID, "mid_p": "0.5"}, "must be a number"),
    ({**MID, "mid_p": float("nan")}, "must be a number"),
    ({**MID, "top_k": True}, "must be a number"),
])
def test_bad_theta_is_refused_with_one_sentence(theta, fragment):
    with pytest.raises(ValueError) as e:
        G.check_theta(theta)
    assert fragment in str(e.value)


def test_integral_floats_are_accepted_as_integers():
    assert G.check_theta({**MID, "top_nodes": 6.0})["top_nodes"] == 6


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "generator.py"), *args], capture_output=True,
                          text=True, cwd=cwd)


@pytest.mark.slow
def test_cli_prints_summary_saves_and_reloads(tmp_path):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"config": {**MIN, "tau": 4.0, "alpha": 0.9}, "accuracy": 0.9}))  # search.py's
    out = run_cli("--theta", str(best), "--seed", "2", "--save", str(tmp_path / "arch.json"))
    assert out.returncode == 0, out.stderr
    assert "params" in out.stdout and "MACs" in out.stdout and "memory" in out.stdout
    arch = json.loads((tmp_path / "arch.json").read_text())
    assert arch == json.loads(json.dumps(G.sample(MIN, 2)))
    again = run_cli("--arch", str(tmp_path / "arch.json"))
    assert again.returncode == 0 and f"{arch['params']:,}" in again.stdout


@pytest.mark.slow
def test_cli_stages_nago_is_saved_with_the_architecture(tmp_path, capsys):
    theta = {**MIN, "top_nodes": 4}
    assert G.main(["--theta", json.dumps(theta), "--stages", "nago", "--image-size", "16", "--max-params", "100000",
                   "--save", str(tmp_path / "arch.json")]) == 0
    assert "stages [4, 0, 0] (nago rule)" in capsys.readouterr().out
    arch = json.loads((tmp_path / "arch.json").read_text())
    assert arch["stages_rule"] == "nago"
    assert arch == json.loads(json.dumps(G.sample(theta, 0, 16, 10, 100_000, stages="nago")))


@pytest.mark.slow
def test_documented_generator_figures_and_imagenet_command():
    """docs/stages.md's figures for the all-min and all-max θ, and docs/cost.md's 224 px command (its
    tested block, run as written) with the MACs that page's ImageNet cost estimate uses."""
    for theta, width, params in ((MIN, 49, 3_952_396), (MAX, 8, 3_769_376)):
        arch = G.sample(theta, 0)
        assert (arch["width"], arch["params"]) == (width, params)
        assert f"width {width} and {params:,}" in " ".join((DOCS / "stages.md").read_text().split())
    args = shlex.split(documented_block("cost.md", "imagenet-macs"))
    assert args[:2] == ["python", "generator.py"]
    out = run_cli(*args[2:])
    assert out.returncode == 0, out.stderr
    assert "MACs    1,984.3 M per 224 px image" in out.stdout and "1,984 M MACs" in (DOCS / "cost.md").read_text()


@pytest.mark.parametrize("args,fragment", [
    (["--theta", "/no/such/file.json"], "cannot read --theta file"),
    (["--theta", "{not json"], "is not valid JSON"),
    (["--theta", json.dumps({**MID, "top_k": 9})], "outside its range"),
    (["--theta", json.dumps(MID), "--max-params", "1000"], "raise --max-params"),
    (["--arch", json.dumps({"a": 1})], "not an architecture file"),
    (["--arch", json.dumps({"a": 1}), "--stages", "nago"], "--stages and --width-multiple apply to --theta"),
    (["--arch", json.dumps({"a": 1}), "--width-multiple", "8"], "--stages and --width-multiple apply to --theta"),
])
@pytest.mark.slow
def test_cli_errors_are_one_sentence_and_nonzero(args, fragment):
    out = run_cli(*args)
    assert out.returncode != 0
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_draw_without_matplotlib_says_how_to_install(tmp_path):
    blocker = tmp_path / "matplotlib.py"
    blocker.write_text("raise ImportError('blocked for the test')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "generator.py"), "--theta", json.dumps(MIN),
                          "--draw", str(tmp_path / "a.png")], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "pip install matplotlib" in out.stderr


@pytest.mark.slow
def test_cli_draw_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = run_cli("--theta", json.dumps(MID), "--draw", str(tmp_path / "a.png"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
