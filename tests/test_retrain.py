"""retrain.py's table (Table 1: k architectures x runs each) against hand computations, read from a
hand-written results file: the command finds every run finished and only prints and summarises."""

import concurrent.futures as cf
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import retrain as R  # noqa: E402

THETA = {"top_nodes": 3, "top_k": 2, "top_p": 0.5, "mid_nodes": 3, "mid_p": 0.5, "bottom_nodes": 3,
         "bottom_k": 2, "bottom_p": 0.5, "tau": 4.0, "alpha": 0.5}


def finished_folder(tmp_path, accuracies):
    """best.json and an output folder whose results.jsonl holds one row per (architecture, run),
    written by hand: architecture i has seed i (retrain's default --seed 0) and the given accuracies."""
    (tmp_path / "best.json").write_text(json.dumps({"config": THETA, "dataset": "digits"}))
    out = tmp_path / "retrain"
    out.mkdir()
    rows = [{"index": i, "seed": i, "run": r, "accuracy": acc, "params": 1e6 * (i + 1), "macs": 2e6 * (i + 1),
             "memory_mb": 0.5 * (i + 1), "wall_s": 1.0, "epochs": 1, "checkpoint": "x.pt"}
            for i, runs in enumerate(accuracies) for r, acc in enumerate(runs)]
    (out / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return out


def retrain(tmp_path, out, k, runs):
    return subprocess.run([sys.executable, os.path.join(ROOT, "retrain.py"), "--theta", str(tmp_path / "best.json"),
                           "--no-kd", "--k", str(k), "--runs", str(runs), "--gpus", "0", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_three_architectures_of_three_runs(tmp_path):
    """Means 92, 82, 86 % (sample stds 2, 2, √3); their mean 86.67 %; across architectures the
    sample std of (92, 82, 86) is √(76/3) = 5.03; across runs the pooled std √((4 + 4 + 3) / 3) = 1.91."""
    out = finished_folder(tmp_path, [[0.90, 0.92, 0.94], [0.80, 0.84, 0.82], [0.85, 0.85, 0.88]])
    r = retrain(tmp_path, out, 3, 3)
    assert r.returncode == 0, r.stderr
    assert "retraining 0 of 3 x 3 students" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean"] == pytest.approx(260 / 3)
    assert summary["std"] == pytest.approx((76 / 3) ** 0.5)
    assert summary["run_std"] == pytest.approx((11 / 3) ** 0.5)
    assert (summary["k"], summary["runs"]) == (3, 9)
    table = (out / "table.txt").read_text().splitlines()
    assert table[1].split() == ["0", "0", "3", "92.00", "±", "2.00", "1.000", "2.0", "0.500"]
    assert table[3].split()[3:6] == ["86.00", "±", "1.73"]
    assert table[4].split() == ["mean", "9", "86.67", "±", "5.03", "2.000", "4.0", "1.000"]
    assert table[5] == "spread across architectures ± 5.03; across runs of one architecture ± 1.91"
    assert r.stdout.rstrip().endswith(table[-1])


def table_of(tmp_path, accuracies):
    """retrain.table on the rows of a hand-written results file (no teacher row)."""
    out = finished_folder(tmp_path, accuracies)
    return R.table([json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()], None)


@pytest.mark.slow
def test_runs_of_unequal_number_are_pooled_by_their_degrees_of_freedom(tmp_path):
    """Architecture 0 finished 3 runs (variance 4), architecture 1 two (80 and 84: variance 8):
    pooled across runs √((2·4 + 1·8) / 3) = 2.31, where an average of the two stds would say 2.41."""
    text, stats = table_of(tmp_path, [[0.90, 0.92, 0.94], [0.80, 0.84]])
    assert stats["mean"] == pytest.approx((92 + 82) / 2)
    assert stats["std"] == pytest.approx(50 ** 0.5)
    assert stats["run_std"] == pytest.approx((16 / 3) ** 0.5)
    assert (stats["k"], stats["runs"]) == (2, 5)


@pytest.mark.slow
def test_one_run_each_says_the_spread_across_runs_was_not_measured(tmp_path):
    out = finished_folder(tmp_path, [[0.90], [0.80]])
    r = retrain(tmp_path, out, 2, 1)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean"] == pytest.approx(85) and summary["std"] == pytest.approx(50 ** 0.5)
    assert summary["run_std"] is None
    assert "across runs of one architecture not measured (1 run each)" in r.stdout
    assert "nan" not in r.stdout


def test_one_architecture_says_the_spread_across_architectures_was_not_measured(tmp_path, capsys):
    text, stats = table_of(tmp_path, [[0.90, 0.94]])
    assert stats["mean"] == pytest.approx(92) and stats["run_std"] == pytest.approx(8 ** 0.5)
    assert stats["std"] is None and "spread across architectures not measured (1 architecture)" in text
    assert "nan" not in text
    import report  # its Table 1 reads the same statistics from summary.json
    report.print_tables([], [({**stats, "students": [{"params": 1e6, "memory_mb": 0.5}]}, "one")])
    assert "one" in capsys.readouterr().out


def settings_of(tmp_path, best, *flags):
    (tmp_path / "best.json").write_text(json.dumps(best))
    return R.resolve(R.parser().parse_args(["--theta", str(tmp_path / "best.json"), "--no-kd", "--gpus", "0",
                                            "--out", str(tmp_path / "retrain"), *flags]))[0]


def test_students_take_the_searchs_stage_rule_and_the_build_options_given(tmp_path):
    searched = {"config": THETA, "dataset": "digits", "no_kd": True, "settings": {"stages": "nago"}}
    s = settings_of(tmp_path, searched)
    assert (s.stages, s.auxiliary, s.drop_path_prob) == ("nago", False, 0.0)  # the search's rule; both off
    s = settings_of(tmp_path, searched, "--stages", "even", "--auxiliary", "--drop-path-prob", "0.2")
    assert (s.to_json()["stages"], s.to_json()["auxiliary"], s.to_json()["drop_path_prob"]) == ("even", True, 0.2)
    older = settings_of(tmp_path, {"config": THETA, "dataset": "digits", "no_kd": True})  # no stage rule saved
    assert older.stages == "even"


def test_a_retraining_resumes_only_with_its_student_options(tmp_path):
    """retrain.json keeps the stage rule and build options; an older one without them reads as even,
    no auxiliary head, no drop path."""
    best = {"config": THETA, "dataset": "digits", "no_kd": True}
    s = settings_of(tmp_path, best)
    old = s.to_json()
    for key in ("stages", "auxiliary", "drop_path_prob"):
        del old[key]
    out = tmp_path / "retrain"
    out.mkdir()
    (out / "retrain.json").write_text(json.dumps({"settings": old}))
    R.check_folder(s, out)  # resumes
    for flags, named in ((["--auxiliary"], "auxiliary"), (["--drop-path-prob", "0.3"], "drop_path_prob"),
                         (["--stages", "nago"], "stages")):
        with pytest.raises(ValueError, match=f"{named} .* there"):
            R.check_folder(settings_of(tmp_path, best, *flags), out)


@pytest.mark.parametrize("value", ["1", "-0.1", "x"])
def test_a_drop_path_probability_outside_0_to_1_is_refused(capsys, value):
    with pytest.raises(SystemExit):
        R.parser().parse_args(["--theta", "b.json", "--drop-path-prob", value])
    assert "--drop-path-prob" in capsys.readouterr().err


def test_a_failed_student_is_not_logged_so_the_next_run_trains_it_again(tmp_path, capsys):
    """retrain.py logs finished students only: a student whose worker failed, for any cause, is left
    out of results.jsonl, and run() trains every (seed, run) the log lacks."""
    class Pool(cf.ThreadPoolExecutor):
        def submit(self, fn, index, seed, repeat):
            future = cf.Future()
            if index == 1:
                future.set_exception(MemoryError("lost"))
            else:
                future.set_result({"index": index, "seed": seed, "run": repeat, "accuracy": 0.9})
            return future

    log, rows = tmp_path / "results.jsonl", []
    with Pool(1) as pool:
        failures = R.train_all(pool, [(0, 0, 0), (1, 1, 0), (2, 2, 0)], rows, log, 0)
    assert len(failures) == 1 and "student (1, 1, 0): lost" in failures[0]
    assert sorted(json.loads(line)["index"] for line in log.read_text().splitlines()) == [0, 2]
