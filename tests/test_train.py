"""train.py and data.py on CPU: the real data-set code paths on tiny files written here in the real
on-disk formats, augmentation against a brute-force reference, exact resume, and the failure modes."""
import dataclasses
import hashlib
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from machinery import files
import data as D
from machinery import capture
import train as T


class Tiny(nn.Module):
    """A small CNN with the hooks train.py looks for: dropout (global RNG), a drop-path attribute,
    and optionally an auxiliary head returning (logits, aux) in training mode, like the DARTS teacher."""

    def __init__(self, num_classes=10, auxiliary=False, drop_path_prob=None):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.2))
        self.head = nn.Linear(32, num_classes)
        self.aux = nn.Linear(32, num_classes) if auxiliary else None
        if drop_path_prob is not None:
            self.drop_path_prob = drop_path_prob

    def forward(self, x):
        h = self.body(x)                                                # (B, 32)
        if self.training and getattr(self, "drop_path_prob", 0) > 0:
            keep = (torch.rand(h.shape[0], 1) >= self.drop_path_prob).float()
            h = h * keep / (1 - self.drop_path_prob)
        logits = self.head(h)
        return (logits, self.aux(h)) if self.aux is not None and self.training else logits


def model(seed=0, **kw):
    torch.manual_seed(seed)
    return Tiny(**kw)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tests run many tiny ops: one thread avoids waking a pool for each (on a busy 2-core
    machine each parallel region can wait a whole scheduler time slice)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return D.load_data("digits")


def quiet(*_):
    pass


# ---------------------------------------------------------------------------------------------
# Augmentation

def test_crop_flip_outputs_are_crops_of_the_padded_image():
    """Output i equals one of the (2p+1)^2 x 2 crops (flipped or not) of zero-padded input order[i],
    found by brute force in numpy; offsets and flips are spread over their range."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    order = torch.randperm(64, generator=g)
    out, views = D.crop_flip(D.padded_views(x, 2, True), order, 2, g)
    out = out.numpy()
    assert views[:, 0].tolist() == order.tolist()  # each row says which view of which image it is
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)))
    found = []
    for i, j in enumerate(order.tolist()):
        hits = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                if np.array_equal(out[i], (lambda c: c[..., ::-1] if f else c)(
                    padded[j, :, dy:dy + 8, dx:dx + 8]))]
        assert hits, f"output {i} is no crop of input {j}"
        _, mirror, dy, dx = views[i].tolist()  # the view it names: the mirror's crop at dx is the
        assert ((dy, 4 - dx, True) if mirror else (dy, dx, False)) in hits  # crop at 2p - dx, flipped
        found.append(hits[0])
    assert len({(dy, dx) for dy, dx, _ in found}) > 10
    assert 10 < sum(f for *_, f in found) < 54


def test_no_flip_preset_never_flips():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (32, 3, 6, 6), dtype=torch.uint8, generator=g)
    assert torch.equal(D.crop_flip(D.padded_views(x, 0, False), torch.arange(32), 0, g)[0], x)
    assert D.PRESETS["digits"].flip is False and D.PRESETS["cifar10"].flip is True


def test_cutout_zeroes_one_clipped_square_per_image():
    g = torch.Generator().manual_seed(2)
    x = torch.ones(200, 3, 32, 32)
    out = D.cutout(x, 16, g)
    for img in out:
        hole = (img == 0).all(0).numpy()                                # (H, W)
        assert ((img == 0).any(0).numpy() == hole).all()                # all channels alike
        rows, cols = np.where(hole.any(1))[0], np.where(hole.any(0))[0]
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16
        assert hole.sum() == len(rows) * len(cols)                      # a rectangle
        assert np.array_equal(rows, np.arange(rows[0], rows[-1] + 1))


def test_normalise_matches_torchvision():
    from torchvision.transforms import functional as TF
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    p = D.PRESETS["cifar10"]
    expected = torch.stack([TF.normalize(TF.to_tensor(img.permute(1, 2, 0).numpy()), p.mean, p.std)
                            for img in x])
    torch.testing.assert_close(D.normalise(x, p), expected)


# ---------------------------------------------------------------------------------------------
# Data sets in their real on-disk formats

def write_cifar(root, monkeypatch, cls, n_train=30, n_test=20):
    """Tiny pickled batches in CIFAR's own format; the expected MD5s are patched to theirs (the
    real ones describe the full-size files), so torchvision's class reads them with its checks on."""
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    label_key = "labels" if cls.__name__ == "CIFAR10" else "fine_labels"
    arrays, lists = {}, {}
    for kind, files, n in (("train", cls.train_list, n_train), ("test", cls.test_list, n_test)):
        xs, ys, listing = [], [], []
        for name, _ in files:
            x = rng.integers(0, 256, (n // len(files), 3072), dtype=np.uint8)
            y = rng.integers(0, 10, n // len(files)).tolist()
            (folder / name).write_bytes(pickle.dumps({"data": x, label_key: y}))
            listing.append([name, hashlib.md5((folder / name).read_bytes()).hexdigest()])
            xs.append(x.reshape(-1, 3, 32, 32))
            ys += y
        arrays[kind], lists[kind] = (np.concatenate(xs), np.array(ys)), listing
    meta = folder / cls.meta["filename"]
    meta.write_bytes(pickle.dumps({cls.meta["key"]: [f"c{i}" for i in range(10)]}))
    monkeypatch.setattr(cls, "train_list", lists["train"])
    monkeypatch.setattr(cls, "test_list", lists["test"])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": hashlib.md5(meta.read_bytes()).hexdigest()})
    return arrays


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickled_batches(tmp_path, monkeypatch, name):
    from torchvision import datasets
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    (x_tr, y_tr), (x_te, y_te) = write_cifar(tmp_path, monkeypatch, cls).values()
    search = D.load_data(name, tmp_path, "search", val_size=10)
    assert search.test is None and len(search.train) == 20 and len(search.val) == 10
    # train + hold-out partition the training file exactly
    got = torch.cat([search.train.x, search.val.x]).flatten(1).numpy()
    assert sorted(map(bytes, got)) == sorted(map(bytes, x_tr.reshape(len(x_tr), -1)))
    final = D.load_data(name, tmp_path, "final")
    assert final.val is None
    assert np.array_equal(final.test.x.numpy(), x_te) and np.array_equal(final.test.y.numpy(), y_te)
    assert np.array_equal(final.train.x.numpy(), x_tr)
    assert final.num_classes == (10 if name == "cifar10" else 100) and final.image_size == 32


def test_corrupt_cifar_is_one_sentence(tmp_path, monkeypatch):
    from torchvision import datasets
    write_cifar(tmp_path, monkeypatch, datasets.CIFAR10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="--download"):
        D.load_data("cifar10", tmp_path, "search", val_size=5)


def write_pngs(folder, n, size, rng):
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(a).save(folder / f"{i:03d}.png")
        out.append(a.transpose(2, 0, 1))
    return out


def test_small_image_folder_and_its_cache(tmp_path):
    rng = np.random.default_rng(0)
    root, cache = tmp_path / "cifar-like", tmp_path / "cache"
    expected = {part: {c: write_pngs(root / part / c, n, 32, rng) for c in ("b_cls", "a_cls")}
                for part, n in (("train", 6), ("test", 3))}
    first = D.load_data("cifar10", root, "final", cache_dir=cache)
    assert len(list(cache.iterdir())) == 2
    again = D.load_data("cifar10", root, "final", cache_dir=cache)        # read from the cache
    for d in (first, again):
        want = np.stack(expected["test"]["a_cls"] + expected["test"]["b_cls"])  # classes sorted
        assert np.array_equal(d.test.x.numpy(), want)
        assert d.test.y.tolist() == [0] * 3 + [1] * 3
    assert torch.equal(first.train.x, again.train.x)


def write_mit67(root, rng):
    classes = {"kitchen": 5, "bar": 4}
    train, test = [], []
    for c, n in classes.items():
        (root / "Images" / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(
                root / "Images" / c / f"img{i}.jpg")
            (test if i < 2 else train).append(f"{c}/img{i}.jpg")
    (root / "TrainImages.txt").write_text("\n".join(train) + "\n")
    (root / "TestImages.txt").write_text("\n".join(test) + "\n")
    return train, test


def test_mit67_official_split_through_a_dataloader(tmp_path):
    rng = np.random.default_rng(0)
    train, test = write_mit67(tmp_path, rng)
    final = D.load_data("mit67", tmp_path, "final")
    assert len(final.train) == len(train) and len(final.test) == len(test)
    listed = {p.split("/", 1)[1] for p in test}
    assert {s[0].rsplit("/", 1)[1] for s in final.test.folder.samples} >= listed
    x, y, views = next(D.batches(final, final.test, 4, train=False, workers=0))
    assert views is None  # random-resized crops are no finite set of views
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
    torch.manual_seed(0)
    net = Tiny(num_classes=67)
    result = T.fit(net, final, T.Protocol(epochs=1, batch_size=2), options=T.RunOptions(workers=1, log=quiet))
    assert not result["failed"] and result["eval_split"] == "test"
    search = D.load_data("mit67", tmp_path, "search", val_size=2)
    assert search.test is None and len(search.train) == 3 and len(search.val) == 2


def test_missing_data_names_both_layouts(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        D.load_data("cifar10", tmp_path / "nowhere")
    assert "--download" in str(e.value) and "train/<class>" in str(e.value)
    with pytest.raises(FileNotFoundError, match="TrainImages.txt"):
        D.load_data("mit67", tmp_path)
    with pytest.raises(ValueError, match="unknown data set"):
        D.load_data("mnist")


def test_digits_splits(digits):
    assert (len(digits.train), len(digits.val)) == (1097, 300) and digits.test is None
    final = D.load_data("digits", split="final")
    assert (len(final.train), len(final.test)) == (1397, 400)
    assert final.train.x.dtype == torch.uint8 and final.train.x.shape[1:] == (3, 16, 16)
    # the hold-out is a part of the final training set, disjoint from the test set
    rows = lambda s: {bytes(r) for r in s.x.flatten(1).numpy()}
    assert rows(digits.val) <= rows(final.train) and not rows(digits.val) & rows(final.test)


# ---------------------------------------------------------------------------------------------
# The training loop

def test_resume_gives_the_same_weights_as_straight(digits, tmp_path):
    """2 epochs, stop, resume for 2 more == 4 epochs straight, bitwise (KD, aux head, drop path)."""
    teacher = model(seed=9)
    kd = dict(teacher=teacher, tau=3.0, alpha=0.5)
    run = T.RunOptions(seed=3, log=quiet)
    four = T.Protocol(epochs=4, cutout=4)
    straight = model(auxiliary=True, drop_path_prob=0.3)
    r_straight = T.fit(straight, digits, four, **kd, options=run)
    ckpt = tmp_path / "run.pt"
    first = model(auxiliary=True, drop_path_prob=0.3)
    T.fit(first, digits, four, **kd, options=dataclasses.replace(run, save=ckpt, stop_after=2))
    assert T.load_checkpoint(ckpt)["epoch"] == 2
    torch.manual_seed(12345)  # a different global RNG state: the checkpoint must restore it
    resumed = model(seed=5, auxiliary=True, drop_path_prob=0.3)  # other initial weights too
    r_resumed = T.fit(resumed, digits, four, **kd, options=dataclasses.replace(run, save=ckpt, resume=True))
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert r_resumed["epochs"] == 4 and r_resumed["accuracy"] == r_straight["accuracy"]
    state = T.load_checkpoint(ckpt)
    assert state["epoch"] == 4 and state["config"]["tau"] == 3.0 and state["versions"]["torch"]
    with pytest.raises(files.CheckpointError, match="alpha 0.5 there, 0.7 now"):
        T.fit(model(auxiliary=True, drop_path_prob=0.3), digits, four, **{**kd, "alpha": 0.7},
              options=dataclasses.replace(run, save=ckpt, resume=True))
    with pytest.raises(ValueError, match="--resume"):
        T.fit(model(), digits, four, options=dataclasses.replace(run, save=ckpt))


def test_cosine_schedule_and_drop_path_ramp(digits):
    net = model(drop_path_prob=0.2)
    seen = []
    forward = net.forward
    net.forward = lambda x: (seen.append(net.drop_path_prob), forward(x))[1]
    result = T.fit(net, digits, T.Protocol(epochs=4, batch_size=48), options=T.RunOptions(log=quiet))
    # lr after each epoch: 0.025 * 48/96 * (1 + cos(pi e / 4)) / 2
    for row in result["history"]:
        expected = 0.0125 * (1 + math.cos(math.pi * row["epoch"] / 4)) / 2
        assert row["lr"] == pytest.approx(expected, abs=1e-12)
    assert sorted(set(seen))[:4] == pytest.approx([0.0, 0.05, 0.1, 0.15])


def test_step_schedule_is_torchs_step_lr(digits):
    """--schedule step (NAGO's search) against torch.optim.lr_scheduler.StepLR stepped once per epoch."""
    protocol = T.Protocol(epochs=5, batch_size=48, schedule="step", lr_step=2, lr_gamma=0.5)
    result = T.fit(model(), digits, protocol, options=T.RunOptions(log=quiet))
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0125)  # 0.025 at 96 -> 48
    reference = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    expected = []
    for _ in range(5):
        optimizer.step()
        reference.step()
        expected.append(reference.get_last_lr()[0])
    assert [row["lr"] for row in result["history"]] == pytest.approx(expected, abs=1e-12)


def one_step(digits, clip):
    """The weights after one kd_step at --grad-clip `clip` (a large rate, so that clipping binds)."""
    net = model(seed=4)
    run = T.setup(net, digits, T.Protocol(grad_clip=clip, lr=5.0), None, T.TAU, 0.0, T.RunOptions(workers=0))
    x, y, _ = next(iter(D.batches(digits, digits.train, 64, train=False, workers=0)))
    torch.manual_seed(0)  # dropout
    T.kd_step(run, x, y, None)
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_grad_clip_zero_does_not_clip(digits):
    unclipped = one_step(digits, 0.0)
    assert torch.equal(unclipped, one_step(digits, 1e12))        # a norm no gradient reaches
    assert not torch.allclose(unclipped, one_step(digits, 1e-3))  # a norm that binds


def test_a_checkpoint_from_before_a_setting_existed_reads_as_that_version_trained():
    """train.as_now: a config without the schedule fields trained with the cosine; a student without
    its stage rule and build options was even-staged, without auxiliary head or drop path."""
    arch = {"theta": {}, "cells": [], "width": 4}
    old = {"arch": "nago", "arch_options": {"arch": arch}, "lr": 0.025, "grad_clip": 5.0}
    now = T.as_now(old)
    assert (now["schedule"], now["lr_step"], now["lr_gamma"]) == ("cosine", 20, 0.5)
    assert now["arch_options"] == {"arch": {**arch, "stages_rule": "even"}, "auxiliary": False, "drop_path_prob": 0.0}
    given = {"arch": "nago", "schedule": "step", "arch_options": {"arch": {**arch, "stages_rule": "nago"},
                                                                  "auxiliary": True, "drop_path_prob": 0.2}}
    assert T.as_now(given) == {**T.BEFORE, **given}  # what a file says is kept
    assert T.as_now({"arch": "darts", "arch_options": {"width": 8}})["arch_options"] == {"width": 8}


def test_student_options_reach_the_model_and_the_checkpoint(digits, tmp_path):
    """f_kd's `student`: the stage rule to generator.sample, the auxiliary head and drop path to
    generator.build; all three in the checkpoint's arch_options, and a resume that changes one refused."""
    theta = {"top_nodes": 4, "top_k": 2, "top_p": 0.5, "mid_nodes": 3, "mid_p": 0.5, "bottom_nodes": 3,
             "bottom_k": 2, "bottom_p": 0.5}
    student = {"max_params": 30000, "stages": "nago", "auxiliary": True, "drop_path_prob": 0.1}
    data = dataclasses.replace(digits, train=D.TensorSplit(digits.train.x[:128], digits.train.y[:128]))
    options = T.RunOptions(save=str(tmp_path / "s.pt"), resume=True, stop_after=1, log=quiet, workers=0)
    protocol = T.Protocol(batch_size=64, bn_batches=1)
    result, arch, net = T.f_kd(theta, 2, 0, data, None, protocol, options, student)
    # NAGO's rule keeps 4 cells in one stage, so there is no third stage for the auxiliary head
    assert arch["stages_rule"] == "nago" and [c["stage"] for c in arch["cells"]] == [0, 0, 0, 0]
    assert net.auxiliary_head is None and result["config"]["drop_path_prob"] == pytest.approx(0.1)
    saved = T.load_checkpoint(tmp_path / "s.pt")["config"]["arch_options"]
    assert saved == {"arch": arch, "auxiliary": True, "drop_path_prob": 0.1}
    with pytest.raises(files.CheckpointError, match="arch_options"):
        T.f_kd(theta, 2, 0, data, None, protocol, options, {**student, "auxiliary": False})
    even = dataclasses.replace(options, save=str(tmp_path / "even.pt"))
    result, arch, net = T.f_kd(theta, 2, 0, data, None, protocol, even, {**student, "stages": "even"})
    assert [c["stage"] for c in arch["cells"]] == [0, 0, 1, 2] and net.auxiliary_head is not None
    assert result["epochs"] == 1 and T.load_checkpoint(even.save)["config"]["arch_options"]["auxiliary"]


def test_training_learns_and_reports(digits):
    result = T.fit(model(), digits, T.Protocol(epochs=8, batch_size=32, lr=0.2), options=T.RunOptions(seed=0, log=quiet))
    assert not result["failed"] and result["error"] is None and result["epochs"] == 8
    assert result["accuracy"] > 0.6  # chance is 0.1; this 8-channel net reaches about 0.8
    assert result["images_per_s"] > 0 and result["wall_s"] > 0


def test_bf16_autocast_on_cpu(digits):
    result = T.fit(model(), digits, T.Protocol(epochs=1, amp="bf16"), teacher=model(seed=1), alpha=0.5,
                   options=T.RunOptions(log=quiet))
    assert not result["failed"] and result["config"]["amp"] == "bf16"
    with pytest.raises(ValueError, match="CUDA"):
        T.fit(model(), digits, T.Protocol(epochs=1, amp="fp16"), options=T.RunOptions(log=quiet))


def test_score_matches_a_plain_forward(digits):
    net = model().eval()
    acc, loss = T.score(net, digits, digits.val, 64)
    with torch.no_grad():
        logits = net(D.normalise(digits.val.x, digits.preset))
    assert acc == pytest.approx((logits.argmax(1) == digits.val.y).float().mean().item())
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, digits.val.y).item(), rel=1e-5)


class NaNNet(Tiny):
    def forward(self, x):
        return super().forward(x) * float("nan")


def test_nan_loss_is_a_failed_run_not_a_crash(digits):
    result = T.fit(NaNNet(), digits, T.Protocol(epochs=3), options=T.RunOptions(log=quiet))
    assert result["failed"] and result["accuracy"] is None and "nan" in result["error"]
    assert result["epochs"] == 0


def test_teacher_with_other_classes_is_refused(digits):
    with pytest.raises(ValueError, match="same data set"):
        T.fit(model(), digits, T.Protocol(epochs=1), teacher=Tiny(num_classes=100), alpha=0.5, options=T.RunOptions(log=quiet))
    with pytest.raises(ValueError, match="needs --teacher"):
        T.fit(model(), digits, T.Protocol(epochs=1), alpha=0.5, options=T.RunOptions(log=quiet))


def test_corrupt_checkpoint_is_one_sentence(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(files.CheckpointError, match="not a readable checkpoint"):
        T.load_checkpoint(bad)
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(files.CheckpointError, match="not a train.py checkpoint"):
        T.load_checkpoint(bad)


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "c.pt"
    files.save_checkpoint(path, {"model": {}, "epoch": 1, "config": {}})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind
    assert T.load_checkpoint(path)["epoch"] == 1


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    rc = T.main(["--arch", "darts", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("error: no cifar10 data") and "\n" not in err
    rc = T.main(["--arch", "darts", "--dataset", "digits", "--resume"])
    assert rc == 1 and "--save" in capsys.readouterr().err
    rc = T.main(["--arch", "darts", "--dataset", "digits", "--from-scratch", "--epochs", "1"])
    assert rc == 1 and "--from-scratch apply to --arch inception_resnet_v2" in capsys.readouterr().err
    rc = T.main(["--arch", "darts", "--dataset", "digits", "--stages", "nago", "--epochs", "1"])
    assert rc == 1 and "--stages sets how a --theta student" in capsys.readouterr().err


def test_cli_teacher_then_student_with_kd(tmp_path, capsys):
    """The README's two commands on the bundled digits: train a (tiny) DARTS teacher, then a student
    of G(θ) with KD from it; each prints progress lines and a final JSON summary."""
    import json
    teacher = tmp_path / "teacher.pt"
    assert T.main(["--arch", "darts", "--width", "4", "--layers", "3", "--dataset", "digits",
                   "--split", "final", "--epochs", "1", "--batch-size", "700", "--save", str(teacher)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["config"]["arch"] == "darts" and summary["profile"]["params"] > 0
    theta = tmp_path / "theta.json"
    theta.write_text(json.dumps({"config": {"top_nodes": 3, "top_k": 2, "top_p": 0.5, "mid_nodes": 3,
                                            "mid_p": 0.5, "bottom_nodes": 3, "bottom_k": 2,
                                            "bottom_p": 0.5, "tau": 2.0, "alpha": 0.7}}))
    assert T.main(["--theta", str(theta), "--dataset", "digits", "--epochs", "1", "--max-params",
                   "30000", "--batch-size", "550", "--teacher", str(teacher)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("epoch    1/1") and " val " in out[0]
    summary = json.loads(out[-1])
    assert (summary["config"]["tau"], summary["config"]["alpha"]) == (2.0, 0.7)
    assert summary["config"]["teacher"] == str(teacher) and summary["profile"]["params"] <= 30000
    assert summary["config"]["arch_options"]["arch"]["stages_rule"] == "even"
    assert T.main(["--theta", str(theta), "--dataset", "digits", "--epochs", "1", "--max-params", "30000",
                   "--batch-size", "550", "--alpha", "0", "--stages", "nago"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["config"]["arch_options"]["arch"][
        "stages_rule"] == "nago"
    assert T.main(["--theta", str(theta), "--dataset", "digits", "--epochs", "1", "--max-params",
                   "30000"]) == 1  # alpha = 0.7 from the θ file needs a teacher
    assert "--teacher" in capsys.readouterr().err


def test_data_cli_prints_the_splits(capsys):
    D.main(["--dataset", "digits"])
    assert "digits (search): {'train': 1097, 'val': 300}" in capsys.readouterr().out


def test_sgd_matches_torch_sgd():
    """train.SGD (foreach ops, a tensor learning rate allowed) against torch.optim.SGD's own update,
    in float64, over steps with a changing learning rate; the tensor rate is read at every step."""
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    b = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    b.load_state_dict(a.state_dict())
    lr = torch.tensor(0.1, dtype=torch.float64)
    ours = capture.SGD(a.parameters(), lr, momentum=0.9, weight_decay=3e-4)
    ref = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4, foreach=False)
    x = torch.randn(16, 6, dtype=torch.float64)
    for i in range(5):
        for net, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
        lr.fill_(0.1 / (i + 2))  # the schedule moves the tensor in place
        ref.param_groups[0]["lr"] = 0.1 / (i + 2)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_shared_exclusive_lock_lets_a_recording_go_first():
    """Steps share the lock; a recording waits for the running step, runs alone, and a step that
    comes while the recording waits goes after it."""
    import threading
    lock, order = capture.SharedExclusiveLock(), []
    step_running, release_step, release_recording = threading.Event(), threading.Event(), threading.Event()
    recording_running = threading.Event()

    def first_step():
        with lock.hold():
            order.append("step 1")
            step_running.set()
            release_step.wait(30)

    def recording():
        with lock.hold(exclusive=True):
            order.append("recording")
            recording_running.set()
            release_recording.wait(30)

    def later_step():
        with lock.hold():
            order.append("step 2")

    threads = [threading.Thread(target=first_step)]
    threads[0].start()
    step_running.wait(5)
    threads.append(threading.Thread(target=recording))
    threads[1].start()
    while not lock.waiting:  # the recording is waiting for step 1
        pass
    threads.append(threading.Thread(target=later_step))
    threads[2].start()
    threads[2].join(0.2)
    assert order == ["step 1"]  # step 2 waits behind the waiting recording
    release_step.set()
    assert recording_running.wait(30)
    threads[2].join(0.2)
    assert order == ["step 1", "recording"]  # the recording runs alone
    release_recording.set()
    for t in threads:
        t.join(30)
    assert order == ["step 1", "recording", "step 2"]


def test_a_failed_recording_is_said_once_and_trains_like_eager(digits, capsys):
    """On the CPU recording a CUDA graph fails after the warm-up steps: the step says so once, puts
    the weights, buffers and momentum back, and the run's losses and weights are eager's exactly."""
    data = dataclasses.replace(digits, train=D.TensorSplit(digits.train.x[:256], digits.train.y[:256]))
    runs = []
    for capture in (False, True):
        net = model(seed=2)
        run = T.setup(net, data, T.Protocol(epochs=2, batch_size=64), None, T.TAU, 0.0, T.RunOptions(workers=0))
        run.step.can_capture = capture
        losses = [T.train_epoch(run, data.generator(0))[0] for _ in range(2)]
        runs.append((losses, [p.detach().clone() for p in net.parameters()], run.step.failure))
    (eager, w_eager, _), (tried, w_tried, failure) = runs
    assert failure is not None and capsys.readouterr().err.count("training eagerly") == 1
    assert tried == eager
    for a, b in zip(w_eager, w_tried):
        assert torch.equal(a, b)
