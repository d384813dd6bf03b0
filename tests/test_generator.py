"""generator.py against independent references: networkx's DAG algorithms, hand-computed sums,
sizes and MACs, a second Python process, and the real module's own parameter count."""

import itertools
import json
import os
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

MIN = {k: lo for k, (_, lo, _) in G.SPACE.items()}
MAX = {k: hi for k, (_, _, hi) in G.SPACE.items()}
MID = {"top_nodes": 6, "top_k": 4, "top_p": 0.5, "mid_nodes": 4, "mid_p": 0.6,
       "bottom_nodes": 4, "bottom_k": 2, "bottom_p": 0.5}


def random_theta(rng):
    return {k: int(rng.integers(lo, hi + 1)) if kind is int else float(rng.uniform(lo, hi))
            for k, (kind, lo, hi) in G.SPACE.items()}


def corners():
    """All 2^8 corners of the box: the released NAGO code crashes on some (e.g. 3 nodes with k = 5)."""
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


def test_stages_split_cells_evenly_and_consecutively():
    assert G.stages_of(3) == [0, 1, 2]
    assert G.stages_of(10) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert G.stages_of(8) == [0, 0, 0, 1, 1, 1, 2, 2]


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


def test_architecture_json_round_trip_rebuilds_the_same_network():
    arch = G.sample(MIN, seed=3)
    loaded = json.loads(json.dumps(arch))
    torch.manual_seed(0)
    a = G.build(arch).eval()
    torch.manual_seed(0)
    b = G.build(loaded).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


# ---------------------------------------------------------------------------------------------- modules

@pytest.mark.parametrize("theta,image_size,classes", [(MIN, 32, 10), (MAX, 32, 100), (MID, 32, 10),
                                                      (MIN, 224, 67), (MID, 224, 67)])
def test_forward_backward_shapes_and_every_parameter_gets_a_gradient(theta, image_size, classes):
    model = G.build(G.sample(theta, seed=1, image_size=image_size, num_classes=classes))
    x = torch.randn(2, 3, image_size, image_size)
    y = model(x)
    assert y.shape == (2, classes)
    y.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


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


def test_edges_across_stages_are_pooled_and_projected():
    """Cells of a later stage run at half the resolution and twice the width of the stage before."""
    arch = G.sample(MIN, seed=0)
    model = G.build(arch)
    sizes = []
    for cell in model.cells.nodes:
        cell.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    model(torch.randn(1, 3, 32, 32))
    c = arch["width"]
    assert sizes == [(c, 32, 32), (2 * c, 16, 16), (4 * c, 8, 8)]


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


def test_cli_prints_summary_saves_and_reloads(tmp_path):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"theta": MIN, "tau": 4.0, "alpha": 0.9}))  # the shape search.py writes
    out = run_cli("--theta", str(best), "--seed", "2", "--save", str(tmp_path / "arch.json"))
    assert out.returncode == 0, out.stderr
    assert "params" in out.stdout and "MACs" in out.stdout and "memory" in out.stdout
    arch = json.loads((tmp_path / "arch.json").read_text())
    assert arch == json.loads(json.dumps(G.sample(MIN, 2)))
    again = run_cli("--arch", str(tmp_path / "arch.json"))
    assert again.returncode == 0 and f"{arch['params']:,}" in again.stdout


@pytest.mark.parametrize("args,fragment", [
    (["--theta", "/no/such/file.json"], "cannot read --theta file"),
    (["--theta", "{not json"], "is not valid JSON"),
    (["--theta", json.dumps({**MID, "top_k": 9})], "outside its range"),
    (["--theta", json.dumps(MID), "--max-params", "1000"], "raise --max-params"),
    (["--arch", json.dumps({"a": 1})], "not an architecture file"),
])
def test_cli_errors_are_one_sentence_and_nonzero(args, fragment):
    out = run_cli(*args)
    assert out.returncode != 0
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_cli_draw_without_matplotlib_says_how_to_install(tmp_path):
    blocker = tmp_path / "matplotlib.py"
    blocker.write_text("raise ImportError('blocked for the test')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "generator.py"), "--theta", json.dumps(MIN),
                          "--draw", str(tmp_path / "a.png")], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "pip install matplotlib" in out.stderr


def test_cli_draw_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = run_cli("--theta", json.dumps(MID), "--draw", str(tmp_path / "a.png"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
