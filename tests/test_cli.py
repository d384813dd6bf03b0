"""Bad commands, as a new user types them: each exits non-zero with one line on stderr that names the
fix, no traceback, and writes or changes no file. Then the processes: a killed search leaves no worker
behind, and a finished search run again exits 0 and changes nothing."""
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import bohb  # noqa: E402
import data  # noqa: E402
import generator  # noqa: E402
import report  # noqa: E402
import retrain  # noqa: E402
import search  # noqa: E402
import teachers  # noqa: E402
import train  # noqa: E402

MAIN = {"search": search.main, "train": train.main, "retrain": retrain.main, "generator": generator.main,
        "report": report.main, "data": data.main, "bohb": bohb.main}
THETA = {"top_nodes": 3, "top_k": 2, "top_p": 0.5, "mid_nodes": 3, "mid_p": 0.5, "bottom_nodes": 3,
         "bottom_k": 2, "bottom_p": 0.5}
ONE = ["--dataset", "digits", "--min-budget", "1", "--max-budget", "1", "--max-params", "120000", "--gpus", "0",
       "--no-kd", "--study", "0", "--workers", "1"]  # one training per Hyperband iteration, no study


def snapshot(folder):
    """Every file below `folder` with its mode and the hash of its bytes."""
    return {str(p.relative_to(folder)): (p.stat().st_mode, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def run(script, argv, capsys):
    """A stage's main(argv) in this process: (exit status, stderr)."""
    try:
        status = MAIN[script](argv)
    except SystemExit as e:  # argparse's own exit
        status = e.code
    return status, capsys.readouterr().err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The inputs the bad commands point at, made once: a teacher, a best.json, damaged files."""
    d = tmp_path_factory.mktemp("inputs")
    net = teachers.build("darts", 10, width=4, layers=3, auxiliary=False)
    config = {"arch": "darts", "arch_options": {"width": 4, "layers": 3, "auxiliary": False}, "dataset": "digits",
              "num_classes": 10}
    torch.save({"model": net.state_dict(), "epoch": 1, "config": config}, d / "teacher.pt")
    state = {k: v.clone() for k, v in net.state_dict().items()}
    next(v for v in state.values() if v.is_floating_point()).view(-1)[0] = float("inf")
    torch.save({"model": state, "epoch": 1, "config": config}, d / "nan_teacher.pt")
    (d / "binary.json").write_bytes(bytes(range(256)))
    (d / "theta.json").write_text(json.dumps(THETA))
    (d / "best.json").write_text(json.dumps({"config": {**THETA, "tau": 3.0, "alpha": 0.5}, "dataset": "digits",
                                             "teacher": str(d / "teacher.pt")}))
    (d / "best_bool.json").write_text(json.dumps({"config": {**THETA, "tau": True, "alpha": 0.5},
                                                  "dataset": "digits"}))
    (d / "best_nokd.json").write_text(json.dumps({"config": THETA, "dataset": "digits", "no_kd": True, "teacher": None}))
    (d / "best_svhn.json").write_text(json.dumps({"config": THETA, "dataset": "svhn", "no_kd": True}))
    whole = (d / "teacher.pt").read_bytes()
    (d / "truncated.pt").write_bytes(whole[:len(whole) // 2])
    torch.save({"model": net.state_dict(), "epoch": 1, "config": {**config, "dataset": "cifar10"}}, d / "cifar_teacher.pt")
    student = generator.build(generator.sample(THETA, 0, 16, 10, max_params=30_000))
    torch.save({"model": student.state_dict(), "epoch": 1, "config": {"arch": "nago", "dataset": "digits",
                                                                      "num_classes": 10}}, d / "student.pt")
    (d / "digits").mkdir()
    (d / "digits" / "digits.csv.gz").write_bytes(gzip.compress(b"1,2,3\n4,5\n"))
    (d / "folder.pt").mkdir()
    (d / "not_a_log").mkdir()
    (d / "not_a_log" / "results.jsonl").write_text(json.dumps({"budget": 1.0}) + "\n")
    (d / "failed").mkdir()
    job = {"iteration": 0, "bracket": 0, "rung": 0, "index": 0, "budget": 1.0, "config": THETA, "origin": "random"}
    (d / "failed" / "results.jsonl").write_text(json.dumps({**job, "loss": None, "error": "boom", "info": {},
                                                            "started": 1.0, "finished": 2.0}) + "\n")
    good = {**job, "loss": 0.1, "error": None, "info": {"accuracy": 0.9}, "started": 1.0, "finished": 2.0}
    (d / "string_accuracy").mkdir()  # a success whose accuracy is text: never counted
    (d / "string_accuracy" / "results.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in (good, {**good, "info": {"accuracy": "0.9"}}, good)))
    best = {"config": {**THETA, "tau": 3.0, "alpha": 0.5}, "dataset": "digits"}
    for name, changes in (("teacher5", {"teacher": 5}), ("settings_list", {"settings": []}),
                          ("svhn", {"dataset": "svhn"}), ("huge_dataset", {"dataset": "x" * 11_000_000})):
        (d / f"best_{name}.json").write_text(json.dumps({**best, **changes}))
    (d / "theta_huge_value.json").write_text(json.dumps({**THETA, "top_p": [0.5] * 3_000_000}))
    (d / "theta_many_keys.json").write_text(json.dumps({**THETA, **{f"k{i}": 1 for i in range(800_000)}}))
    return d


def inline(**changes):
    return json.dumps({**THETA, **changes})


# (script, arguments, a fragment of the one line it must print); {d} is the inputs folder
BAD = [
    ("search", ["--dataset", "digits", "--iterations", "0"], "argument --iterations: must be a positive whole number"),
    ("search", ["--dataset", "digits", "--batch-size", "0"], "argument --batch-size: must be a positive"),
    ("search", ["--dataset", "digits", "--workers", "0", "--gpus", "0"], "argument --workers: must be a positive"),
    ("search", ["--dataset", "digits", "--workers-per-gpu", "-1"], "argument --workers-per-gpu"),
    ("search", ["--dataset", "digits", "--eta", "1"], "argument --eta: must be an integer >= 2"),
    ("search", ["--dataset", "digits", "--eta", "2.5"], "argument --eta: must be a whole number"),
    ("search", ["--dataset", "digits", "--min-budget", "0.2"], "give --min-budget 1 or"),
    ("search", ["--dataset", "digits", "--min-budget", "-1"], "argument --min-budget: must be a number > 0"),
    ("search", ["--dataset", "digits", "--min-budget", "4", "--max-budget", "2"], "is larger than --max-budget"),
    ("search", ["--dataset", "digits", "--lr", "0"], "argument --lr: must be a number > 0"),
    ("search", ["--dataset", "digits", "--lr", "nan"], "argument --lr: must be a finite number"),
    ("search", ["--dataset", "digits", "--val-size", "0"], "argument --val-size"),
    ("search", ["--dataset", "digits", "--max-params", "abc"], "argument --max-params: must be a number"),
    ("search", ["--dataset", "digits", "--no-kd", "--max-params", "2e4"], "does not fit --max-params"),
    ("search", ["--dataset", "digits", "--gpus", "2"], "more GPUs than"),
    ("search", ["--dataset", "digits", "--gpus", "-1"], "argument --gpus"),
    ("search", ["--dataset", "svhn"], "argument --dataset: invalid choice"),
    ("search", ["--dataset", "cifar10", "--gpus", "0"], "needs --teacher CKPT"),
    ("search", ["--dataset", "digits", "--teacher", "/no/such.pt", "--gpus", "0"], "not found; check --teacher"),
    ("search", ["--dataset", "digits", "--teacher", "{d}/binary.json", "--gpus", "0"], "not a readable train.py checkpoint"),
    ("search", ["--dataset", "digits", "--teacher", "{d}/nan_teacher.pt", "--gpus", "0"], "non-finite weights"),
    ("search", ["--dataset", "digits", "--no-kd", "--gpus", "0", "--data-dir", "{d}/digits"], "not the UCI digits table"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--epochs", "0"], "argument --epochs: must be a positive"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--epochs", "-3"], "argument --epochs"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--batch-size", "0"], "argument --batch-size"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--eval-every", "0"], "argument --eval-every"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--stop-after", "0"], "argument --stop-after"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--device", "cuda"], "use --device cpu"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--device", "tpu"], "argument --device"),
    ("train", ["--theta", "{d}/binary.json", "--dataset", "digits"], "is not a text file"),
    ("train", ["--theta", "{d}/folder.pt", "--dataset", "digits"], "is a folder"),
    ("train", ["--theta", inline(tau="3"), "--dataset", "digits"], "θ['tau'] must be a number"),
    ("train", ["--theta", inline(tau=True), "--dataset", "digits"], "θ['tau'] must be a number"),
    ("train", ["--theta", inline(depth=3), "--dataset", "digits"], "unknown key(s) depth"),
    ("train", ["--theta", inline(top_nodes=3.5), "--dataset", "digits"], "must be an integer"),
    ("train", ["--theta", "{d}/theta.json", "--dataset", "digits", "--alpha", "2", "--teacher", "{d}/teacher.pt"],
     "outside its range"),
    ("train", ["--theta", "{d}/theta.json", "--dataset", "digits", "--alpha", "0.5"], "needs --teacher"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--save", "{d}/folder.pt", "--resume"], "is a folder"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--save", "/proc/autokd/run.pt"], "cannot write --save"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--resume"], "give --save too"),
    ("train", ["--theta", "{d}/theta.json", "--dataset", "digits", "--width", "8"], "--width applies to a teacher"),
    ("train", ["--theta", "{d}/theta.json", "--dataset", "digits", "--from-scratch"], "--from-scratch applies to a teacher"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--max-params", "1e5"], "drop it"),
    ("retrain", ["--theta", "{d}/best.json", "--k", "0"], "argument --k: must be a positive"),
    ("retrain", ["--theta", "{d}/best.json", "--epochs", "0"], "argument --epochs"),
    ("retrain", ["--theta", "{d}/best.json", "--epochs", "-1"], "argument --epochs"),
    ("retrain", ["--theta", "{d}/best.json", "--runs", "0"], "argument --runs"),
    ("retrain", ["--theta", "{d}/best.json", "--eval-every", "0"], "argument --eval-every"),
    ("retrain", ["--theta", "/no/such/best.json"], "cannot read --theta file"),
    ("retrain", ["--theta", "{d}/binary.json"], "is not a text file"),
    ("retrain", ["--theta", "{d}/theta.json"], "is not a best.json from search.py"),
    ("retrain", ["--theta", "{d}/best_bool.json", "--no-kd"], "θ['tau'] must be a number"),
    ("generator", ["--theta", "{BAD"], "--theta (inline JSON) is not valid JSON"),
    ("generator", ["--theta", "{d}/theta.json", "--image-size", "0"], "argument --image-size"),
    ("generator", ["--theta", "{d}/theta.json", "--max-params", "0"], "argument --max-params"),
    ("generator", ["--arch", "{d}/theta.json"], "not an architecture file"),
    ("report", ["/no/such/folder"], "has no results.jsonl"),
    ("report", ["{d}/not_a_log"], "line 1 is not a search result: field iteration is missing"),
    ("report", ["{d}/failed"], "every evaluation in"),
    ("data", ["--dataset", "digits", "--data-dir", "{d}/digits"], "not the UCI digits table"),
    ("retrain", ["--theta", "{d}/best_teacher5.json"], "is not a best.json from search.py: field teacher must be a "
                                                       "string or null, not 5"),
    ("retrain", ["--theta", "{d}/best_settings_list.json"], "field settings must be a JSON object, not []"),
    ("retrain", ["--theta", "{d}/best_svhn.json", "--no-kd"], 'field dataset must be one of cifar10, cifar100, digits'),
    ("retrain", ["--theta", "{d}/best_huge_dataset.json", "--no-kd"], 'field dataset must be one of'),
    ("train", ["--theta", "{d}/theta_huge_value.json", "--dataset", "digits"], "θ['top_p'] must be a number"),
    ("train", ["--theta", "{d}/theta_many_keys.json", "--dataset", "digits"], "θ has unknown key(s) k0, k1"),
    ("generator", ["--theta", "{d}/theta_huge_value.json"], "θ['top_p'] must be a number"),
    ("report", ["{d}/string_accuracy"], 'line 2 is not a search result: field info.accuracy must be a number in [0, 1], '
                                        'not "0.9"; repair or remove line 2'),
    ("search", ["--dataset", "digits", "--min-budget", "1", "--max-budget", "3"], "give --max-budget 2 or --max-budget 4"),
    ("search", ["--dataset", "digits", "--max-budget", "8192"], "give --max-budget at most 2048"),
    ("bohb", ["--plan", "--min-budget", "1", "--max-budget", "3"], "make rungs of 1.5, 3 epochs"),
    ("bohb", ["--plan", "--min-budget", "1", "--max-budget", "8192"], "more than 10,000 trainings per Hyperband iteration"),
    ("bohb", ["--plan", "--eta", "1"], "argument --eta"),
    ("bohb", ["--plan", "--min-budget", "0"], "argument --min-budget"),
    # Every numeric flag has a range. Seeds: what numpy and torch accept, 0 to 2**32 - 1.
    ("search", ["--dataset", "digits", "--seed", "-1"], "argument --seed: must be a whole number from 0 to 4,294,967,295"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--seed", "4294967296"], "argument --seed: must be a whole"),
    ("retrain", ["--theta", "{d}/best.json", "--seed", "1.5"], "argument --seed: must be a whole number"),
    ("retrain", ["--theta", "{d}/best.json", "--seed", "4294967295", "--k", "2"], "architecture seeds up to 4,294,967,296"),
    ("generator", ["--theta", "{d}/theta.json", "--seed", "-3"], "argument --seed"),
    ("bohb", ["--plan", "--seed", "1e10"], "argument --seed"),
    # ... epochs and budgets: at most 10,000 epochs
    ("train", ["--arch", "darts", "--dataset", "digits", "--epochs", "1e15"], "argument --epochs: must be a positive "
                                                                              "whole number up to 10,000, not 1e15"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--stop-after", "1e6"], "argument --stop-after"),
    ("retrain", ["--theta", "{d}/best.json", "--epochs", "20000"], "argument --epochs: must be a positive whole"),
    ("retrain", ["--theta", "{d}/best.json", "--eval-every", "1e9"], "argument --eval-every"),
    ("search", ["--dataset", "digits", "--max-budget", "1e12"], "argument --max-budget: must be a number > 0 up to 10,000"),
    ("search", ["--dataset", "digits", "--min-budget", "2e4"], "argument --min-budget"),
    ("bohb", ["--plan", "--max-budget", "1e12"], "argument --max-budget"),
    # ... counts: architectures, runs, iterations, the study, workers, sizes
    ("retrain", ["--theta", "{d}/best.json", "--k", "1e12"], "argument --k: must be a positive whole number up to 1,000"),
    ("retrain", ["--theta", "{d}/best.json", "--runs", "101"], "argument --runs"),
    ("search", ["--dataset", "digits", "--iterations", "1e6"], "argument --iterations: must be a positive whole number up"),
    ("search", ["--dataset", "digits", "--study", "1e9"], "argument --study: must be a whole number from 0 to 10,000"),
    ("search", ["--dataset", "digits", "--gpus", "0", "--workers", "1e6"], "argument --workers"),
    ("search", ["--dataset", "digits", "--max-nodes", "11"], "argument --max-nodes: must be a whole number from 4 to 10"),
    ("bohb", ["--demo", "--iterations", "1e9"], "argument --iterations"),
    ("bohb", ["--demo", "--workers", "1e5"], "argument --workers"),
    ("generator", ["--theta", "{d}/theta.json", "--image-size", "1e6"], "argument --image-size"),
    ("generator", ["--theta", "{d}/theta.json", "--num-classes", "1e9"], "argument --num-classes"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--width", "1e9"], "argument --width"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--momentum", "1.5"], "argument --momentum"),
    # ... a batch no larger than the training split, known once the data is loaded
    ("search", ["--dataset", "digits", "--no-kd", "--gpus", "0", "--batch-size", "5000"],
     "--batch-size 5,000 is larger than the 1,097 training images of digits"),
    ("search", ["--dataset", "digits", "--batch-size", "1e9"], "argument --batch-size"),
    ("train", ["--arch", "darts", "--dataset", "digits", "--split", "final", "--batch-size", "1398"],
     "larger than the 1,397 training images"),
    # ... a parameter limit that fits this machine's memory
    ("search", ["--dataset", "digits", "--max-params", "1e30"], "argument --max-params: must be a positive whole number up to"),
    ("train", ["--theta", "{d}/theta.json", "--dataset", "digits", "--max-params", "1e30"], "fit this machine's memory"),
    ("generator", ["--theta", "{d}/theta.json", "--max-params", "1e30"], "argument --max-params"),
    # retrain.py checks best.json, the data and the teacher before it writes anything, as search.py does
    ("retrain", ["--theta", "{d}/best.json", "--teacher", "{d}/truncated.pt"], "not a readable train.py checkpoint"),
    ("retrain", ["--theta", "{d}/best.json", "--teacher", "{d}/cifar_teacher.pt"], "was trained on cifar10"),
    ("retrain", ["--theta", "{d}/best.json", "--teacher", "{d}/student.pt"], "holds a 'nago' network, not a teacher"),
    ("retrain", ["--theta", "{d}/best.json", "--teacher", "{d}/nan_teacher.pt"], "non-finite weights"),
    ("retrain", ["--theta", "{d}/best.json", "--data-dir", "{d}/digits"], "not the UCI digits table"),
    ("retrain", ["--theta", "{d}/best_nokd.json", "--teacher", "{d}/teacher.pt"], "comes from a --no-kd search: its θ "
                                                                                "has no KD temperature and weight"),
    ("retrain", ["--theta", "{d}/best.json", "--no-kd", "--teacher", "{d}/teacher.pt"], "--teacher would go unused"),
    ("search", ["--dataset", "digits", "--no-kd", "--teacher", "{d}/teacher.pt"], "--teacher would go unused"),
]


@pytest.mark.slow
@pytest.mark.parametrize("script,argv,fragment", BAD, ids=[f"{s} {' '.join(a)}"[:70] for s, a, _ in BAD])
def test_a_bad_command_says_one_sentence_and_changes_nothing(script, argv, fragment, files, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output folders (runs/...) land here
    argv = [a.replace("{d}", str(files)) for a in argv]
    if script in ("search", "retrain"):
        argv += ["--out", str(tmp_path / "out")]
    before, inputs = snapshot(tmp_path), snapshot(files)
    status, err = run(script, argv, capsys)
    assert status not in (0, None), err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err[:2000]
    assert fragment in lines[0] and len(lines[0]) < 600, lines[0][:2000]  # an 11 MB file gives a short line
    assert snapshot(tmp_path) == before and snapshot(files) == inputs


def test_the_same_flag_parses_alike_everywhere(capsys, tmp_path):
    """--max-params 1e5 is 100,000 for every stage that takes it."""
    assert train.parser().parse_args(["--theta", "x", "--max-params", "1e5"]).max_params == 100_000
    assert search.parser().parse_args(["--max-params", "1e5"]).max_params == 100_000
    assert generator.main(["--theta", json.dumps(THETA), "--max-params", "1e5", "--image-size", "16"]) == 0
    assert "limit 100,000" in capsys.readouterr().out


def test_a_resume_with_other_settings_names_them_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "search"
    out.mkdir()
    settings, _ = search.resolve(search.parser().parse_args(ONE))
    (out / "search.json").write_text(json.dumps({"settings": {**settings.to_json(), "seed": 7}}))
    before = snapshot(out)
    status, err = run("search", ONE + ["--out", str(out)], capsys)
    assert status == 1 and "seed 7 there, 0 now" in err and "architecture" not in err and len(err) < 300
    assert snapshot(out) == before


RECORD = {"iteration": 0, "bracket": 0, "rung": 0, "index": 0, "budget": 1.0, "config": THETA, "origin": "random",
          "loss": 0.1, "error": None, "info": {"accuracy": 0.9}, "started": 1.0, "finished": 2.0}


@pytest.mark.parametrize("name, text, fragment", [
    ("results.jsonl", json.dumps(RECORD) + "\n{}\n", "results.jsonl line 2 is not a search result: field iteration "
                                                     "is missing; repair or remove line 2"),
    ("results.jsonl", json.dumps({**RECORD, "info": {"accuracy": "0.9"}}) + "\n",
     'line 1 is not a search result: field info.accuracy must be a number in [0, 1], not "0.9"'),
    ("results.jsonl", json.dumps({**RECORD, "loss": "abc"}) + "\n", 'field loss must be a number in [0, 1] or null'),
    ("study.jsonl", json.dumps({**RECORD, "iteration": None, "bracket": None, "rung": -1}) + "\n",
     "study.jsonl line 1 is not a search result: field rung must be a whole number >= 0"),
    ("search.json", "{}", "search.json is not a search.json from search.py: field settings is missing; it holds"),
    ("search.json", "[]", "it must be a JSON object, not []; it holds the settings of the folder's results"),
    ("best.json", json.dumps({"config": THETA, "dataset": "digits"}),
     "best.json is not a best.json from search.py: field accuracy is missing; delete it: search.py writes it again"),
])
def test_a_damaged_file_in_a_search_folder_is_named_and_changes_nothing(tmp_path, capsys, name, text, fragment):
    """Resuming: a damaged line or field is one line naming the file, the line, the field and the fix,
    before anything is written (a text accuracy is never written into best.json)."""
    out = tmp_path / "search"
    out.mkdir()
    settings, _ = search.resolve(search.parser().parse_args(ONE))
    (out / "search.json").write_text(json.dumps({"settings": settings.to_json()}))
    (out / name).write_text(text)
    before = snapshot(out)
    status, err = run("search", ONE + ["--out", str(out)], capsys)
    assert status == 1 and err.count("\n") == 1 and fragment in err, err
    assert snapshot(out) == before


@pytest.mark.parametrize("name, text, fragment", [
    ("results.jsonl", json.dumps({"index": 0, "seed": 0, "run": 0}) + "\n",
     "results.jsonl line 1 is not a retrain result: field accuracy is missing; repair or remove line 1 (a removed "
     "student is run again)"),
    ("teacher.json", json.dumps({"accuracy": "high"}), 'teacher.json is not a teacher report: field accuracy must be'),
    ("retrain.json", json.dumps({"settings": []}), "retrain.json is not a retrain.json from retrain.py: field "
                                                   "settings must be a JSON object, not []"),
])
def test_a_damaged_file_in_a_retrain_folder_is_named_and_changes_nothing(tmp_path, capsys, files, name, text, fragment):
    out = tmp_path / "retrain"
    out.mkdir()
    (out / name).write_text(text)
    before = snapshot(out)
    status, err = run("retrain", ["--theta", str(files / "best.json"), "--no-kd", "--gpus", "0", "--out", str(out)],
                      capsys)
    assert status == 1 and err.count("\n") == 1 and fragment in err, err
    assert snapshot(out) == before


def test_the_same_folder_spelled_otherwise_resumes(tmp_path, monkeypatch):
    """Relative and absolute --out, and --data-dir, are the same folder."""
    monkeypatch.chdir(tmp_path)
    a, _ = search.resolve(search.parser().parse_args(ONE + ["--data-dir", str(ROOT / "data")]))
    monkeypatch.chdir(ROOT)
    b, _ = search.resolve(search.parser().parse_args(ONE + ["--data-dir", "data"]))
    assert a.data_dir == b.data_dir


def test_files_get_the_umask_mode(tmp_path):
    from machinery import files
    old = os.umask(0o027)
    try:
        files.UMASK, saved = 0o027, files.UMASK
        files.write_json(tmp_path / "a.json", {})
        files.save_checkpoint(tmp_path / "c.pt", {"model": {}})
    finally:
        os.umask(old)
        files.UMASK = saved
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o640


def test_the_eta_formatter_counts_days_and_never_overflows():
    from datetime import timedelta
    from machinery import cli as machinery_cli
    for seconds in (0, 59.9, 3723, 2 * 86400 + 3723, 999_999 * 86400):
        assert machinery_cli.hms(seconds) == str(timedelta(seconds=int(seconds)))
    assert machinery_cli.hms(10**10) == "115740 days, 17:46:40"
    assert [machinery_cli.hms(s) for s in (1e15, 1e300, float("inf"), float("nan"), None)] == ["?"] * 5


def test_one_run_per_folder_and_the_lock_leaves_nothing_behind(tmp_path):
    from machinery import cli as machinery_cli, files as machinery_files
    out = tmp_path / "runs" / "out"
    with machinery_files.folder_lock(out):
        assert json.loads((out / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(machinery_cli.UserError, match=f"{out} is in use by pid {os.getpid()} "):
            with machinery_files.folder_lock(out):
                pass  # a second holder, even in this process (flock locks an open file, not a process)
    assert not out.exists() and (tmp_path / "runs").is_dir()  # the folder it made, and only that, is gone
    out.mkdir()
    (out / "results.jsonl").write_text("{}\n")
    with machinery_files.folder_lock(out):
        pass
    assert [p.name for p in out.iterdir()] == ["results.jsonl"]
    (tmp_path / "file").write_text("")
    with pytest.raises(machinery_cli.UserError, match="cannot write --out"):
        with machinery_files.folder_lock(tmp_path / "file" / "out"):
            pass


def test_report_reads_a_log_being_written_without_changing_it(tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    job = {"iteration": 0, "bracket": 0, "rung": 0, "index": 0, "budget": 1.0, "config": THETA, "origin": "random"}
    line = json.dumps({**job, "loss": 0.4, "error": None, "info": {"accuracy": 0.6}, "started": 1.0, "finished": 2.0})
    (out / "results.jsonl").write_text(line + "\n" + line[:40])  # a line half written by a running search
    before = snapshot(out)
    assert report.main([str(out), "--out", str(tmp_path / "fig")]) == 0
    assert snapshot(out) == before


# ----------------------------------------------------------------------------------------------------
# Processes

def cli(*args, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, **kw)


@pytest.mark.slow
def test_a_finished_search_run_again_exits_0_and_changes_nothing(tmp_path):
    out = tmp_path / "search"
    first = cli("search.py", *ONE, "--iterations", "1", "--out", str(out))
    assert first.returncode == 0, first.stderr
    before = snapshot(out)
    again = cli("search.py", *ONE, "--iterations", "1", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "the search is complete" in again.stdout and f"next: python retrain.py --theta {out / 'best.json'}" in again.stdout
    assert snapshot(out) == before


@pytest.mark.slow
def test_workers_die_with_their_killed_parent(tmp_path):
    """kill -9 of search.py: its worker processes exit within seconds (their pipe to the parent closes)."""
    out = tmp_path / "search"
    proc = subprocess.Popen([sys.executable, "search.py", *ONE[:-1], "2", "--iterations", "4", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    group = proc.pid

    def members():
        """Processes of the search's process group other than its (dead) parent."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and int(stat.parent.name) != group and fields[0] != "Z":
                found.append(int(stat.parent.name))
        return found

    deadline = time.time() + 120
    while time.time() < deadline and len(members()) < 2:  # both workers started
        time.sleep(0.2)
    assert len(members()) >= 2, "the workers did not start"
    os.kill(proc.pid, signal.SIGKILL)  # the parent only, not its group
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and members():
        time.sleep(0.2)
    left = members()
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived their parent by 10 s"


HOLD = """import sys, time
from machinery import files
with files.folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(300)
"""


@pytest.mark.slow
def test_a_second_run_into_a_held_folder_is_refused_until_the_holder_dies(tmp_path, files, capsys):
    """Another process holds the folder: search.py and retrain.py into it are refused in one line that
    names it, and change nothing; once it is killed (kill -9 leaves its lock file), the next search runs."""
    out = tmp_path / "search"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(out)
        for script, argv in (("search", ONE + ["--iterations", "1"]),
                             ("retrain", ["--theta", str(files / "best.json"), "--no-kd", "--k", "1", "--epochs", "1",
                                          "--gpus", "0", "--workers", "1"])):
            status, err = run(script, argv + ["--out", str(out)], capsys)
            assert status == 1 and len(err.strip().splitlines()) == 1, err
            assert f"error: {out} is in use by pid {holder.pid} (started " in err and "-c" in err, err
            assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()
    assert (out / ".lock").exists()  # a killed holder's file stays, its lock does not
    status, err = run("search", ONE + ["--iterations", "1", "--out", str(out)], capsys)
    assert status == 0, err
    assert (out / "best.json").is_file() and not (out / ".lock").exists()


def workers_of(pid):
    """The live worker processes (multiprocessing spawn_main, not its resource tracker) of parent `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in command:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_an_evaluation_whose_worker_was_killed_is_retried_once_on_resume(tmp_path):
    """kill -9 of the worker training the search's one student: the evaluation is logged as a
    transient failure, the search says to run it again, and the re-run trains it (attempt 2)."""
    out = tmp_path / "search"
    proc = subprocess.Popen([sys.executable, "search.py", *ONE, "--iterations", "1", "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not workers_of(proc.pid):
        time.sleep(0.1)
    for pid in workers_of(proc.pid):
        os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "1 failed for a transient cause: run the same command again" in err, err
    again = cli("search.py", *ONE, "--iterations", "1", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "1 that failed for a transient cause run once more" in again.stdout
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["attempt"], r["cause"], r["loss"] is None) for r in lines] == [(1, "transient", True), (2, None, False)]
    assert "WorkerDied" in lines[0]["error"]


@pytest.mark.slow
def test_a_torn_last_line_of_retrain_results_is_run_again(tmp_path, files):
    """A kill in the middle of appending to retrain's results.jsonl: the resume drops the torn line,
    trains that student again and keeps the whole ones."""
    out = tmp_path / "retrain"
    args = ["retrain.py", "--theta", str(files / "best.json"), "--no-kd", "--k", "2", "--epochs", "1", "--workers", "1",
            "--gpus", "0", "--out", str(out)]
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text(lines[0] + "\n" + lines[1][:30])
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert "retraining 1 of 2 x 1 students" in again.stdout
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [json.loads(lines[0])["seed"], json.loads(lines[1])["seed"]]
