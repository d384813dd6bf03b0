"""data.py's checks of what a data folder holds, on small files written here in the real formats
(JPEG folders, MIT67's split files, the digits table, the .npz image cache): the class set against
the data set's and between the splits, labels within the classes, unreadable images named, damaged
caches rebuilt; and common.write_atomic's writes that fail for lack of space."""
import errno
import gc
import gzip
import json

import numpy as np
import pytest
import torch
from PIL import Image

import common
import data as D
from teachers import lessons

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
    with pytest.raises(common.UserError) as e:
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
    with pytest.raises(common.UserError, match="train holds 3 classes with images but imagenet has 1000"):
        D.load_data("imagenet", root, "final")
    names = classes(1000)
    for split in ("train", "val"):
        for c in names:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            (root / split / c / "0.jpg").write_bytes((root / "train" / "class00" / "0.jpg").read_bytes())
    (root / "val" / names[5] / "0.jpg").unlink()
    with pytest.raises(common.UserError, match=f"{root / 'train'} holds {names[5]} that {root / 'val'} lacks"):
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
    with pytest.raises(common.UserError, match=f"{root / 'TrainImages.txt'} holds 66 classes with images but mit67 "):
        D.load_data("mit67", root, "search", val_size=2)
    write_split_files(root, classes(67), classes(66) + ["stranger"])
    with pytest.raises(common.UserError, match=f"{root / 'TestImages.txt'} holds stranger that "):
        D.load_data("mit67", root, "search", val_size=2)
    write_split_files(root, classes(67), classes(67))
    with pytest.raises(FileNotFoundError, match=r"lists 67 images but 67 of them are not in"):
        D.load_data("mit67", root, "search", val_size=2)


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
    with pytest.raises(common.UserError, match=f"{tmp_path} holds labels 0 to 12 but the classes of digits are 0 to 9"):
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
    with pytest.raises(common.UserError, match="holds labels 0 to 95 but the classes of cifar10 are 0 to 9"):
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
    common.write_json(path, {"old": 1})
    before = path.read_bytes()
    with pytest.raises(common.NoSpace) as e:
        common.write_atomic(path, stop_for_space)
    message = str(e.value)
    assert message.startswith(f"no space left in {path.parent} for best.json: the write failed after 1000 B with ")
    assert " free; free some space there or choose another folder; best.json is as it was." in message
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["best.json"]


def test_other_write_errors_pass_unchanged(tmp_path):
    path = tmp_path / "x.json"
    common.write_json(path, [1])

    def fail(f):
        raise OSError(errno.EIO, "Input/output error")
    with pytest.raises(OSError) as e:
        common.write_atomic(path, fail)
    assert not isinstance(e.value, common.NoSpace) and e.value.errno == errno.EIO
    assert json.loads(path.read_text()) == [1] and len(list(tmp_path.iterdir())) == 1


def test_torch_save_on_a_full_disk_is_named(tmp_path, monkeypatch):
    """torch.save reports a failed write as an inline_container.cc enforce failure: a checkpoint and
    the teacher's lessons (saved through the same writer) both say the folder and its free space."""
    checkpoint = tmp_path / "run.pt"
    common.save_checkpoint(checkpoint, {"epoch": 1})
    monkeypatch.setattr(torch, "save", torch_stops_for_space)
    with pytest.raises(common.NoSpace, match=f"writing run.pt into {tmp_path} stopped short .* free; free some space"):
        common.save_checkpoint(checkpoint, {"epoch": 2})
    with pytest.raises(common.NoSpace, match=f"writing lessons.pt into {tmp_path} stopped short"):
        lessons.save(lessons.Lessons(torch.zeros(2, 1, 1, 1, 10), {"k": 1}), tmp_path / "lessons.pt")
    monkeypatch.undo()
    assert common.load_checkpoint(checkpoint) == {"epoch": 1}
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
        common.append_jsonl(f, {"job": 1})
        monkeypatch.setattr(common.os, "fsync", lambda fd: stop_for_space(f))
        with pytest.raises(common.NoSpace, match=f"no space left in {tmp_path} for results.jsonl"):
            common.append_jsonl(f, {"job": 2})
