"""teachers/lessons.py: the teacher's logits for every view, computed once, against the live teacher
view for view (the same crops and flips, the same logits, the same losses), on the CPU."""
import dataclasses
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import data as D  # noqa: E402
import generator as G  # noqa: E402
import teachers  # noqa: E402
import train as T  # noqa: E402
from teachers import lessons  # noqa: E402


def cifar_like(n=48, seed=0):
    """A small search split with CIFAR's augmentation (4 px padding, flips: 162 views per image)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    preset = D.PRESETS["cifar10"]
    return D.Data("cifar10", "search", 10, 32, preset, torch.device("cpu"), D.TensorSplit(x, y),
                  D.TensorSplit(x[:16], y[:16]), None)


def teacher(seed=1):
    torch.manual_seed(seed)
    return teachers.build("darts", 10, width=4, layers=3, auxiliary=False).eval()


@pytest.mark.slow
def test_every_view_of_an_epoch_looks_up_the_live_teachers_logits():
    data, net = cifar_like(), teacher()
    table = lessons.compute(net, data, T.nullcontext(), torch.contiguous_format, torch.float32, {})
    assert table.logits.shape == (48, 2, 9, 9, 10)
    gen = data.generator(0)
    seen = set()
    for x, _, views in D.batches(data, data.train, 16, train=True, gen=gen):
        with torch.no_grad():
            live = net(x)                                        # the teacher on this batch's crops
        torch.testing.assert_close(table(views), live, rtol=1e-4, atol=1e-5)
        seen.update(map(tuple, views[:, 1:].tolist()))
    assert len({v[0] for v in seen}) == 2 and len(seen) > 20  # both mirrors, many offsets


@pytest.mark.slow
def test_an_epoch_with_lessons_trains_like_one_with_the_live_teacher():
    data, net = cifar_like(), teacher()
    net.to(memory_format=torch.channels_last)  # as fit runs a live teacher, and as workers compute lessons
    table = lessons.compute(net, data, T.nullcontext(), torch.channels_last, torch.float32, {})
    theta = {k: lo for k, (_, lo, _) in G.SPACE.items()}
    runs = []
    for source in (net, table):
        torch.manual_seed(0)
        model = G.build(G.sample(theta, 0, 32, 10, 60_000))
        result = T.fit(model, data, T.Protocol(epochs=2, batch_size=16, bn_batches=1), source, 3.0, 0.7,
                       T.RunOptions(seed=4, log=lambda _: None))
        runs.append((result, model))
    (live, a), (cached, b) = runs
    assert (live["config"]["lessons"], cached["config"]["lessons"]) == ("live", "cached")
    for row_live, row_cached in zip(live["history"], cached["history"]):
        assert abs(row_live["loss"] - row_cached["loss"]) < 1e-4 * abs(row_live["loss"])
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5)


def test_lessons_are_refused_where_views_are_not_finite():
    data = cifar_like()
    assert lessons.why_live(data, cutout=0) is None
    assert "cutout" in lessons.why_live(data, cutout=16)
    large = dataclasses.replace(data, train=[0] * 10)  # a Dataset, as for 224 px images
    assert "random-resized crops" in lessons.why_live(large, cutout=0)


def test_a_saved_table_is_used_only_for_what_it_was_computed_from(tmp_path):
    table = lessons.Lessons(torch.randn(3, 1, 5, 5, 10), {"teacher": "abc", "dataset": "digits"})
    path = tmp_path / "lessons.pt"
    lessons.save(table, path)
    assert torch.equal(lessons.load(path, table.key, "cpu").logits, table.logits)
    assert lessons.load(path, {**table.key, "teacher": "other"}, "cpu") is None
    path.write_bytes(b"damaged")
    assert lessons.load(path, table.key, "cpu") is None
