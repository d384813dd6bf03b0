"""data.py on the CPU: the real data-set code paths on tiny files written here in the real on-disk
formats, the augmentation against a brute-force reference, and the checks of what a folder holds
(class sets, unreadable images, damaged caches, a full disk), each refused in one line."""
import errno
import gc
import gzip
import hashlib
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import data as D
import train as T
from machinery import cli, files
from teachers import lessons


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
    classes = [f"{c}_cls" for c in "jihgfedcba"]  # written out of order: labels follow the sorted names
    expected = {part: {c: write_pngs(root / part / c, n, 32, rng) for c in classes}
                for part, n in (("train", 3), ("test", 2))}
    first = D.load_data("cifar10", root, "final", cache_dir=cache)
    assert len(list(cache.iterdir())) == 2
    again = D.load_data("cifar10", root, "final", cache_dir=cache)        # read from the cache
    for d in (first, again):
        want = np.stack([a for c in sorted(classes) for a in expected["test"][c]])
        assert np.array_equal(d.test.x.numpy(), want)
        assert d.test.y.tolist() == [i for i in range(10) for _ in range(2)]
    assert torch.equal(first.train.x, again.train.x)


def write_mit67(root, rng, classes=67):
    """MIT67's layout with `classes` classes of two images each, one for training, one for testing."""
    train, test = [], []
    for c in (f"room{k:02d}" for k in range(classes)):
        (root / "Images" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(
                root / "Images" / c / f"img{i}.jpg")
            (test if i == 0 else train).append(f"{c}/img{i}.jpg")
    (root / "TrainImages.txt").write_text("\n".join(train) + "\n")
    (root / "TestImages.txt").write_text("\n".join(test) + "\n")
    return train, test


@pytest.mark.slow
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
    assert search.test is None and len(search.train) == len(train) - 2 and len(search.val) == 2


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


ENFORCE = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"  # torch.save, disk full


def write_jpegs(split, classes, n=2, size=32, seed=0):
    """n random JPEGs in split/<class>/ for each class; returns their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for c in classes:
        (split / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            paths.append(split / c / f"{i}.jpg")
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def image_folder(root, train, test=None):
    """A cifar-style image folder: train/ with classes `train`, test/ with `test` (default the same)."""
    write_jpegs(root / "train", train)
    write_jpegs(root / "test", train if test is None else test, n=1)
    return root


def classes(n):
    return [f"class{i:02d}" for i in range(n)]


def one_line_error(argv, capsys):
    """data.py's command line on `argv`: its exit status must be 1 and stderr one line; returns it."""
    assert D.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# ---------------------------------------------------------------------------------------------
# The class set of a folder

@pytest.mark.parametrize("n, hint", [(12, ""), (1, ""), (100, "--dataset cifar100")])
def test_a_folder_with_another_class_count_is_refused_before_decoding(tmp_path, capsys, n, hint):
    """12 classes used as cifar10 (training would fail on label 10), 1 class (a meaningless 100 %),
    100 classes (the hint names cifar100): one line naming the folder and both counts; no cache made."""
    root, cache = image_folder(tmp_path / "folder", classes(n)), tmp_path / "cache"
    err = one_line_error(["--dataset", "cifar10", "--data-dir", str(root), "--cache-dir", str(cache)], capsys)
    assert f"{root / 'train'} holds {n} class" in err and "cifar10 has 10" in err and hint in err
    assert not cache.exists()


def test_folders_without_images_are_not_classes(tmp_path):
    root = image_folder(tmp_path / "folder", classes(10))
    (root / "train" / "empty").mkdir()
    (root / "test" / "notes").mkdir()
    (root / "test" / "notes" / "readme.txt").write_text("not an image")
    data = D.load_data("cifar10", root, "final", cache_dir=tmp_path / "cache")
    assert sorted(set(data.train.y.tolist())) == list(range(10)) and len(data.test) == 10


@pytest.mark.parametrize("split", ["search", "final"])
def test_a_class_in_one_split_only_is_refused_naming_it(tmp_path, split):
    """test/ with a class train/ lacks and without one train/ has: refused, even by a search, which
    reads test/'s class list only, so that the retraining after it cannot fail on it."""
    train = classes(10)
    root = image_folder(tmp_path / "folder", train, train[:9] + ["stranger"])
    with pytest.raises(cli.UserError) as e:
        D.load_data("cifar10", root, split, val_size=5, cache_dir=tmp_path / "cache")
    message = str(e.value)
    assert f"{root / 'test'} holds stranger that {root / 'train'} lacks" in message
    assert f"{root / 'train'} holds class09 that {root / 'test'} lacks" in message
    assert not (tmp_path / "cache").exists()


def test_an_image_folder_needs_its_test_split(tmp_path):
    root = tmp_path / "folder"
    write_jpegs(root / "train", classes(10))
    with pytest.raises(FileNotFoundError, match="test does not exist"):
        D.load_data("cifar10", root, "search", val_size=5, cache_dir=tmp_path / "cache")


def test_imagenet_folders_are_checked_alike(tmp_path):
    """imagenet's train/ and val/: the count (1000), then both splits hold the same classes, and the
    labels follow train/'s classes only."""
    root = tmp_path / "imagenet"
    write_jpegs(root / "train", classes(3), n=1)
    write_jpegs(root / "val", classes(3), n=1)
    with pytest.raises(cli.UserError, match="train holds 3 classes with images but imagenet has 1000"):
        D.load_data("imagenet", root, "final")
    names = classes(1000)
    for split in ("train", "val"):
        for c in names:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            (root / split / c / "0.jpg").write_bytes((root / "train" / "class00" / "0.jpg").read_bytes())
    (root / "val" / names[5] / "0.jpg").unlink()
    with pytest.raises(cli.UserError, match=f"{root / 'train'} holds {names[5]} that {root / 'val'} lacks"):
        D.load_data("imagenet", root, "final")
    (root / "val" / names[5] / "0.jpg").write_bytes((root / "train" / "class00" / "0.jpg").read_bytes())
    (root / "train" / "zz_empty").mkdir()  # no images: no class, no label
    final = D.load_data("imagenet", root, "final")
    assert final.test.folder.classes == sorted(names) and final.test.folder.samples[-1][1] == 999


def write_split_files(root, train, test):
    """MIT67's TrainImages.txt and TestImages.txt listing images <class>/0.jpg of the classes `train`
    and <class>/1.jpg of the classes `test`."""
    (root / "Images").mkdir(parents=True, exist_ok=True)
    for name, names, image in (("TrainImages.txt", train, 0), ("TestImages.txt", test, 1)):
        (root / name).write_text("".join(f"{c}/{image}.jpg\n" for c in names))


def test_mit67_split_files_are_checked_alike(tmp_path):
    root = tmp_path / "mit67"
    write_split_files(root, classes(66), classes(66))
    with pytest.raises(cli.UserError, match=f"{root / 'TrainImages.txt'} holds 66 classes with images but mit67 "):
        D.load_data("mit67", root, "search", val_size=2)
    write_split_files(root, classes(67), classes(66) + ["stranger"])
    with pytest.raises(cli.UserError, match=f"{root / 'TestImages.txt'} holds stranger that "):
        D.load_data("mit67", root, "search", val_size=2)
    write_split_files(root, classes(67), classes(67))
    with pytest.raises(FileNotFoundError, match=r"lists 67 images but 67 of them are not in"):
        D.load_data("mit67", root, "search", val_size=2)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["13 classes", "a truncated image"])
def test_a_search_on_a_bad_folder_is_refused_before_it_writes(tmp_path, capsys, damage):
    """search.py checks the folder in the parent, before search.json, the cache or any worker."""
    import search
    root = image_folder(tmp_path / "folder", classes(13 if damage == "13 classes" else 10))
    if damage == "a truncated image":
        cut(root / "train" / "class07" / "0.jpg", 100)
    out, cache = tmp_path / "out", tmp_path / "cache"
    status = search.main(["--dataset", "cifar10", "--data-dir", str(root), "--cache-dir", str(cache), "--no-kd",
                          "--val-size", "5", "--gpus", "0", "--workers", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert ("holds 13 classes" if damage == "13 classes" else "class07/0.jpg is not a readable image") in err
    assert not out.exists() and not cache.exists()


# ---------------------------------------------------------------------------------------------
# Labels of the tensor splits

def test_digits_labels_outside_the_classes_are_refused(tmp_path):
    """A digits table whose labels reach 12 (every value still within the table's 0..16)."""
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 17, (500, 64)), rng.integers(0, 10, (500, 1))], 1)
    rows[7, 64] = 12
    with gzip.open(tmp_path / "digits.csv.gz", "wt") as f:
        np.savetxt(f, rows, fmt="%d", delimiter=",")
    with pytest.raises(cli.UserError, match=f"{tmp_path} holds labels 0 to 12 but the classes of digits are 0 to 9"):
        D.load_data("digits", tmp_path, "final")
    rows[7, 64] = 9
    with gzip.open(tmp_path / "digits.csv.gz", "wt") as f:
        np.savetxt(f, rows, fmt="%d", delimiter=",")
    assert D.load_data("digits", tmp_path, "final").train.y.max() <= 9


def test_cifar_pickle_labels_are_checked_too(tmp_path, monkeypatch):
    """The torchvision path returns its labels through the same check (a CIFAR-100 file given as cifar10)."""
    (tmp_path / "cifar-10-batches-py").mkdir()
    x = torch.zeros(20, 3, 32, 32, dtype=torch.uint8)
    monkeypatch.setattr(D, "torchvision_cifar_arrays", lambda *a: (x, torch.arange(20) * 5))
    with pytest.raises(cli.UserError, match="holds labels 0 to 95 but the classes of cifar10 are 0 to 9"):
        D.load_data("cifar10", tmp_path, "search", val_size=5)


# ---------------------------------------------------------------------------------------------
# Unreadable images and damaged caches

def cut(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize("keep", [100, 0.5])
def test_a_truncated_image_is_named_by_its_path(tmp_path, capsys, keep):
    """JPEGs cut to 100 bytes ("Truncated File Read") or to half ("image file is truncated")."""
    root = image_folder(tmp_path / "folder", classes(10))
    bad = root / "train" / "class03" / "1.jpg"
    cut(bad, keep if isinstance(keep, int) else int(keep * bad.stat().st_size))
    err = one_line_error(["--dataset", "cifar10", "--data-dir", str(root), "--cache-dir", str(tmp_path / "c")], capsys)
    assert f"{bad} is not a readable image" in err and "truncated" in err.lower()
    assert not list((tmp_path / "c").glob("*.npz"))


@pytest.mark.slow
def test_an_unreadable_image_in_a_loader_worker_is_named_in_one_line(tmp_path):
    """224 px images are read in DataLoader workers: the error that reaches the parent is the same
    one line, not the worker's traceback. (The loader takes 5 s to stop its worker after an error.)"""
    root = tmp_path / "mit67"
    write_split_files(root, classes(67), classes(67))
    write_jpegs(root / "Images", classes(67), n=2, size=40)
    bad = root / "Images" / "class05" / "1.jpg"
    bad.write_bytes(b"\xff\xd8 not a JPEG")
    final = D.load_data("mit67", root, "final")
    batches = D.batches(final, final.test, 8, train=False, workers=1)
    with pytest.raises(D.UnreadableImage) as e:
        for _ in batches:
            pass
    message = str(e.value)
    del e, batches
    gc.collect()  # the loader and its worker stop here, not in the next test
    assert message.startswith(f"{bad} is not a readable image (") and "\n" not in message


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other images"])
def test_a_damaged_cache_is_said_and_rebuilt(tmp_path, capsys, damage):
    root, cache = image_folder(tmp_path / "folder", classes(10)), tmp_path / "cache"
    first = D.load_data("cifar10", root, "final", cache_dir=cache)
    path = next(cache.glob("*-train-*.npz"))
    if damage == "truncated":
        cut(path, path.stat().st_size // 2)
    elif damage == "garbage":
        path.write_bytes(b"PK\x03\x04 garbage")
    else:
        np.savez(path, x=np.zeros((3, 3, 32, 32), np.uint8), y=np.zeros(3, np.int64))
    capsys.readouterr()
    again = D.load_data("cifar10", root, "final", cache_dir=cache)
    err = capsys.readouterr().err
    assert f"the image cache {path} is damaged" in err and err.count("\n") == 1
    assert torch.equal(again.train.x, first.train.x) and torch.equal(again.train.y, first.train.y)
    with np.load(path) as z:  # rebuilt whole
        assert np.array_equal(z["x"], first.train.x.numpy())
    D.load_data("cifar10", root, "final", cache_dir=cache)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------
# Writes that fail for lack of space

def stop_for_space(f):
    f.write(b"x" * 1000)
    raise OSError(errno.ENOSPC, "No space left on device")


def torch_stops_for_space(obj, f, *args, **kwargs):
    f.write(b"x" * 1000)
    raise RuntimeError(ENFORCE)


def test_a_full_disk_is_named_and_the_previous_file_kept(tmp_path):
    path = tmp_path / "out" / "best.json"
    files.write_json(path, {"old": 1})
    before = path.read_bytes()
    with pytest.raises(files.NoSpace) as e:
        files.write_atomic(path, stop_for_space)
    message = str(e.value)
    assert message.startswith(f"no space left in {path.parent} for best.json: the write failed after 1000 B with ")
    assert " free; free some space there or choose another folder; best.json is as it was." in message
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["best.json"]


def test_other_write_errors_pass_unchanged(tmp_path):
    path = tmp_path / "x.json"
    files.write_json(path, [1])

    def fail(f):
        raise OSError(errno.EIO, "Input/output error")
    with pytest.raises(OSError) as e:
        files.write_atomic(path, fail)
    assert not isinstance(e.value, files.NoSpace) and e.value.errno == errno.EIO
    assert json.loads(path.read_text()) == [1] and len(list(tmp_path.iterdir())) == 1


def test_torch_save_on_a_full_disk_is_named(tmp_path, monkeypatch):
    """torch.save reports a failed write as an inline_container.cc enforce failure: a checkpoint and
    the teacher's lessons (saved through the same writer) both say the folder and its free space."""
    checkpoint = tmp_path / "run.pt"
    files.save_checkpoint(checkpoint, {"epoch": 1})
    monkeypatch.setattr(torch, "save", torch_stops_for_space)
    with pytest.raises(files.NoSpace, match=f"writing run.pt into {tmp_path} stopped short .* free; free some space"):
        files.save_checkpoint(checkpoint, {"epoch": 2})
    with pytest.raises(files.NoSpace, match=f"writing lessons.pt into {tmp_path} stopped short"):
        lessons.save(lessons.Lessons(torch.zeros(2, 1, 1, 1, 10), {"k": 1}), tmp_path / "lessons.pt")
    monkeypatch.undo()
    assert files.load_checkpoint(checkpoint) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_a_full_disk_leaves_the_image_cache_out_and_the_run_going(tmp_path, monkeypatch, capsys):
    root, cache = image_folder(tmp_path / "folder", classes(10)), tmp_path / "cache"
    monkeypatch.setattr(np, "savez", lambda f, **arrays: stop_for_space(f))
    data = D.load_data("cifar10", root, "final", cache_dir=cache)
    err = capsys.readouterr().err
    assert len(data.train) == 20 and err.count(f"note: no space left in {cache} for folder-") == 2
    assert "stay uncached" in err and not list(cache.iterdir())


def test_a_full_disk_while_logging_is_named(tmp_path, monkeypatch):
    log = tmp_path / "results.jsonl"
    with open(log, "ab") as f:
        files.append_jsonl(f, {"job": 1})
        monkeypatch.setattr(files.os, "fsync", lambda fd: stop_for_space(f))
        with pytest.raises(files.NoSpace, match=f"no space left in {tmp_path} for results.jsonl"):
            files.append_jsonl(f, {"job": 2})
