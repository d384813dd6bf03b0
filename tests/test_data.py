"""data.py on the CPU: the real data-set code paths on tiny files written here in the real on-disk
formats, and the augmentation against a brute-force reference."""
import hashlib
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import data as D
import train as T


@pytest.fixture(scope="module")
def digits():
    return D.load_data("digits")


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
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 67))
    result = T.fit(net, final, T.Protocol(epochs=1, batch_size=2),
                   options=T.RunOptions(workers=1, log=lambda line: None))
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


def test_data_cli_prints_the_splits(capsys):
    D.main(["--dataset", "digits"])
    assert "digits (search): {'train': 1097, 'val': 300}" in capsys.readouterr().out
