"""search.py -> retrain.py -> report.py end to end on the bundled digits set, on the CPU, with tiny
budgets; a search killed mid-way and resumed; workers that fail or die; the CLI's refusals."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow  # every test here starts search.py, retrain.py or report.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train  # noqa: E402

# 1 iteration of budgets 1 -> 2 epochs with η = 2: 2 @ 1 -> 1 @ 2, then 2 @ 2: 5 trainings, no study
TINY = ["--dataset", "digits", "--min-budget", "1", "--max-budget", "2", "--iterations", "1",
        "--max-params", "120000", "--gpus", "0", "--study", "0"]
# one budget of 1 epoch: each Hyperband iteration is a single training, so N iterations train N
ONE = ["--dataset", "digits", "--min-budget", "1", "--max-budget", "1", "--max-params", "120000", "--gpus", "0",
       "--no-kd", "--workers", "1", "--study", "0"]


def cli(script, *args, **kw):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          cwd=kw.pop("cwd", ROOT), **kw)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny DARTS teacher for digits, trained for one epoch (its accuracy does not matter here)."""
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    assert train.main(["--arch", "darts", "--dataset", "digits", "--split", "final", "--width", "4",
                       "--layers", "3", "--epochs", "1", "--no-auxiliary", "--save", str(path)]) == 0
    return str(path)


def keys(records):
    return [(r["iteration"], r["bracket"], r["rung"], r["index"]) for r in records]


def read_log(folder):
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_search_retrain_report_end_to_end(tmp_path, teacher):
    out = tmp_path / "search"
    s = cli("search.py", *TINY, "--teacher", teacher, "--workers", "2", "--out", str(out))
    assert s.returncode == 0, s.stderr
    records = read_log(out)
    # Alg. 1 with η = 2, budgets 1 -> 2: bracket s=1 trains 2 @ 1 then 1 @ 2, bracket s=0 trains 2 @ 2
    assert sorted((r["bracket"], r["rung"], r["budget"]) for r in records) == \
        [(0, 0, 1.0), (0, 0, 1.0), (0, 1, 2.0), (1, 0, 2.0), (1, 0, 2.0)]
    for r in records:
        assert r["error"] is None and 0 <= r["info"]["accuracy"] <= 1
        assert r["info"]["params"] <= 120000 and set(r["config"]) >= {"tau", "alpha", "top_nodes"}
    # the promoted configuration keeps its architecture seed across rungs
    promoted = [r for r in records if r["rung"] == 1][0]
    first = [r for r in records if r["rung"] == 0 and r["bracket"] == 0 and r["index"] == promoted["index"]][0]
    assert promoted["config"] == first["config"] and promoted["info"]["arch_seed"] == first["info"]["arch_seed"]
    # best.json: the best result at the largest budget, with its provenance
    best = json.loads((out / "best.json").read_text())
    top = [r for r in records if r["budget"] == 2.0]
    assert best["accuracy"] == max(r["info"]["accuracy"] for r in top)
    assert best["dataset"] == "digits" and best["teacher"] == teacher and best["versions"]["torch"]
    assert str(out / "best.json") in s.stdout

    # the generator reads best.json directly
    g = cli("generator.py", "--theta", str(out / "best.json"), "--image-size", "16", "--max-params", "120000")
    assert g.returncode == 0, g.stderr

    r = cli("retrain.py", "--theta", str(out / "best.json"), "--k", "2", "--epochs", "1", "--workers", "2",
            "--out", str(tmp_path / "retrain"))
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "retrain" / "summary.json").read_text())
    assert summary["k"] == 2 and sorted(s["seed"] for s in summary["students"]) == [0, 1]
    assert summary["teacher"]["params"] > 0 and "±" in r.stdout
    again = cli("retrain.py", "--theta", str(out / "best.json"), "--k", "2", "--epochs", "1",
                "--out", str(tmp_path / "retrain"))  # finished students are read, not retrained
    assert again.returncode == 0 and "retraining 0 of 2 x 1 students" in again.stdout

    rep = cli("report.py", str(out), "--retrain", str(tmp_path / "retrain"), "--out", str(tmp_path / "fig"))
    assert rep.returncode == 0, rep.stderr
    assert "Fig. 2" in rep.stdout and "Fig. 4" in rep.stdout and "Table 1" in rep.stdout
    if "figures skipped" not in rep.stdout:
        for name in ("fig2_histograms", "fig3_best_vs_time", "fig4_rank_correlation", "fig6_accuracy_vs_memory"):
            assert (tmp_path / "fig" / f"{name}.png").stat().st_size > 0


def kill_after_first_result(args, out):
    """Run the search command `args` writing to `out`, kill -9 its process group once its log has a
    result (the parent and its worker processes, mid-search); returns the log as it was left."""
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "results.jsonl").is_file() and len(read_log(out)) >= 1:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return read_log(out)


def test_killed_search_resumes_without_repeating_or_losing_evaluations(tmp_path):
    out = tmp_path / "search"
    args = [sys.executable, os.path.join(ROOT, "search.py"), *ONE, "--iterations", "3", "--out", str(out)]
    before = kill_after_first_result(args, out)
    assert 1 <= len(before) < 3, "the search should have been killed part-way"

    s = cli("search.py", *ONE, "--iterations", "3", "--out", str(out))
    assert s.returncode == 0, s.stderr
    after = read_log(out)
    assert after[:len(before)] == before                      # nothing lost or rewritten
    assert len(set(keys(after))) == len(after) == 3           # nothing repeated, the plan completed
    assert f"{len(before)} evaluations already done" in s.stdout


def test_resume_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "search"
    out.mkdir()
    (out / "search.json").write_text(json.dumps({"settings": {"dataset": "digits", "seed": 1}}))
    s = cli("search.py", *ONE, "--out", str(out))
    assert s.returncode != 0 and "re-run with the same flags" in s.stderr and "Traceback" not in s.stderr


def test_failed_evaluations_are_logged_as_inf_and_the_search_goes_on(tmp_path):
    """A NaN training (learning rate 1e6) fails every evaluation; the search still finishes its plan."""
    out = tmp_path / "search"
    s = cli("search.py", *ONE, "--iterations", "2", "--lr", "1e6", "--out", str(out))
    records = read_log(out)
    assert len(records) == 2
    assert all(r["loss"] is None and "loss became" in r["error"] for r in records)
    assert s.returncode != 0 and "no evaluation succeeded" in s.stderr


@pytest.mark.parametrize("script,args,fragment", [
    ("search.py", ["--dataset", "cifar10", "--gpus", "0"], "needs --teacher CKPT"),
    ("search.py", ["--dataset", "digits", "--teacher", "/no/such.pt", "--gpus", "0"], "not found"),
    ("search.py", ["--dataset", "svhn"], "invalid choice"),
    ("search.py", ["--dataset", "digits", "--no-kd", "--max-params", "20000"], "does not fit --max-params"),
    ("search.py", ["--dataset", "digits", "--no-kd", "--gpus", "64"], "more GPUs than"),
    ("retrain.py", ["--theta", "/no/such/best.json"], "cannot read --theta"),
    ("retrain.py", ["--theta", "{BAD"], "--theta (inline JSON) is not valid JSON"),
    ("report.py", ["/no/such/folder"], "has no results.jsonl"),
])
def test_cli_errors(tmp_path, script, args, fragment):
    r = cli(script, *args, "--out", str(tmp_path / "o")) if script != "report.py" else cli(script, *args)
    assert r.returncode != 0
    assert fragment in r.stderr and "Traceback" not in r.stderr


def test_malformed_best_json_is_refused(tmp_path):
    bad = tmp_path / "best.json"
    bad.write_text("{not json")
    r = cli("retrain.py", "--theta", str(bad))
    assert r.returncode != 0 and "is not valid JSON" in r.stderr
    bad.write_text(json.dumps({"config": {"top_nodes": 99}, "dataset": "digits"}))
    r = cli("retrain.py", "--theta", str(bad))
    assert r.returncode != 0 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_a_teacher_for_another_data_set_is_refused_before_anything_is_written(tmp_path, teacher):
    import torch
    state = torch.load(teacher, weights_only=True)
    state["config"]["dataset"] = "cifar10"
    wrong = tmp_path / "cifar_teacher.pt"
    torch.save(state, wrong)
    out = tmp_path / "search"
    s = cli("search.py", *TINY, "--teacher", str(wrong), "--out", str(out))
    assert s.returncode != 0 and "not digits" in s.stderr and "Traceback" not in s.stderr
    assert not (out / "search.json").exists()  # the corrected command starts afresh, not a mismatch


# ---------------------------------------------------------------------------------------------
# Search protocols, stage rules and repeats

def settings_of(*args):
    import search
    return search.resolve(search.parser().parse_args(list(args)))


def test_the_nago_search_protocol_is_nagos_released_trainer():
    """nago.yml's trainer: SGD lr 0.1 at batch 128 (0.075 in train.py's batch-96 units), momentum
    0.9, weight decay 1e-4, StepLR step 20 gamma 0.5, no clipping (VEGA's grad_clip None)."""
    s, _ = settings_of("--dataset", "cifar10", "--no-kd", "--search-protocol", "nago", "--gpus", "0", "--max-nodes", "4")
    p = s.protocol
    assert (s.search_protocol, p.batch_size, p.lr * p.batch_size / 96) == ("nago", 128, pytest.approx(0.1))
    assert (p.schedule, p.lr_step, p.lr_gamma, p.grad_clip, p.momentum, p.weight_decay) == ("step", 20, 0.5, 0, 0.9, 1e-4)
    assert s.to_json()["search_protocol"] == "nago" and s.to_json()["protocol"]["schedule"] == "step"
    darts, _ = settings_of("--dataset", "cifar10", "--no-kd", "--gpus", "0", "--max-nodes", "4")
    assert (darts.search_protocol, darts.protocol.schedule, darts.protocol.grad_clip) == ("darts", "cosine", 5.0)
    assert (darts.protocol.batch_size, darts.protocol.lr, darts.stages) == (96, 0.025, "even")
    digits, _ = settings_of("--dataset", "digits", "--no-kd", "--search-protocol", "nago", "--stages", "nago",
                            "--gpus", "0")
    assert (digits.protocol.batch_size, digits.protocol.schedule, digits.stages) == (16, "step", "nago")  # preset's batch


def test_a_search_folder_resumes_only_under_its_stage_rule_and_protocol(tmp_path):
    """An older search.json (no stage rule, protocol name or schedule fields) reads as even and
    darts, so it resumes under the defaults and is refused under another rule or protocol."""
    import search
    s, _ = settings_of("--dataset", "digits", "--no-kd", "--gpus", "0")
    old = s.to_json()
    del old["stages"], old["search_protocol"]
    for key in ("schedule", "lr_step", "lr_gamma"):
        del old["protocol"][key]
    (tmp_path / "search.json").write_text(json.dumps({"settings": old}))
    search.check_folder(s, tmp_path)  # resumes
    for flags, named in ((["--stages", "nago"], "stages"), (["--search-protocol", "nago"], "search_protocol")):
        other, _ = settings_of("--dataset", "digits", "--no-kd", "--gpus", "0", *flags)
        with pytest.raises(ValueError, match=f"{named} \"even\" there|{named} \"darts\" there"):
            search.check_folder(other, tmp_path)


def test_repeat_folders_keep_one_layout_per_output_folder(tmp_path):
    import search
    assert search.repeat_folders(tmp_path, 1) == [tmp_path]  # one search: exactly the folder, as always
    assert search.repeat_folders(tmp_path, 3) == [tmp_path / f"repeat-{i}" for i in range(3)]
    (tmp_path / "repeat-0").mkdir()
    (tmp_path / "repeat-0" / "search.json").write_text("{}")
    with pytest.raises(ValueError, match="give --repeats 1 \\(or more\\)"):
        search.repeat_folders(tmp_path, 1)
    single = tmp_path / "single"
    single.mkdir()
    (single / "search.json").write_text("{}")
    with pytest.raises(ValueError, match="holds one search"):
        search.repeat_folders(single, 2)


@pytest.mark.slow
def test_repeats_run_searches_of_consecutive_seeds_and_resume(tmp_path):
    """--repeats 2 (with NAGO's stage rule and search protocol, recorded): two whole search folders,
    seeds 0 and 1, each with its own logs and best.json, and OUT/best.json the better of the two;
    re-run, both are complete and nothing is trained."""
    out = tmp_path / "search"
    flags = [*ONE, "--repeats", "2", "--stages", "nago", "--search-protocol", "nago", "--out", str(out)]
    s = cli("search.py", *flags)
    assert s.returncode == 0, s.stderr
    assert not (out / "search.json").exists() and not (out / "results.jsonl").exists()
    saved = [json.loads((out / f"repeat-{i}" / "search.json").read_text())["settings"] for i in range(2)]
    assert [x["seed"] for x in saved] == [0, 1]
    assert all((x["stages"], x["search_protocol"], x["protocol"]["schedule"]) == ("nago", "nago", "step") for x in saved)
    bests = [json.loads((out / f"repeat-{i}" / "best.json").read_text()) for i in range(2)]
    for i in range(2):
        assert len(read_log(out / f"repeat-{i}")) == 1
    top = json.loads((out / "best.json").read_text())
    assert top["accuracy"] == max(b["accuracy"] for b in bests) and len(top["repeats"]) == 2
    assert f"next: python retrain.py --theta {out / 'best.json'}" in s.stdout
    again = cli("search.py", *flags)
    assert again.returncode == 0 and again.stdout.count("the search is complete; nothing to run") == 2
    one = cli("search.py", *ONE, "--stages", "nago", "--search-protocol", "nago", "--out", str(out))
    assert one.returncode != 0 and "--repeats 2 (or more)" in one.stderr
