"""report.py's numbers against hand computations: Spearman's ρ of Fig. 4, its refusals (never nan),
the study chosen over BOHB's promoted few, the paired KD - no KD differences; arms of several searches
(Fig. 2 pooled, Fig. 3's mean ± std band, Fig. 4's spread against scipy); refusals of mixed arms and of
malformed log lines; Table 1 of one architecture; and a report of two searches without a nan."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import report  # noqa: E402

THETA = {"top_nodes": 3, "top_k": 2, "top_p": 0.5, "mid_nodes": 3, "mid_p": 0.5, "bottom_nodes": 3, "bottom_k": 2,
         "bottom_p": 0.5}


def record(index, budget, accuracy, iteration=None, bracket=None, rung=0, config=None, arch_seed=None, t=0.0):
    return {"iteration": iteration, "bracket": bracket, "rung": rung, "index": index, "budget": budget,
            "config": config or {**THETA, "top_p": 0.1 * (index + 1)}, "origin": "study" if iteration is None else "random",
            "loss": None if accuracy is None else 1 - accuracy, "error": None if accuracy is not None else "boom",
            "info": {} if accuracy is None else {"accuracy": accuracy, "arch_seed": arch_seed if arch_seed is not None else index},
            "started": t, "finished": t + 1}


def study(accuracies, budgets=(1.0, 2.0)):
    return [record(i, b, a) for i, row in enumerate(accuracies) for b, a in zip(budgets, row)]


def test_spearman_matches_the_hand_computation():
    # ranks at 1 epoch 1 2 3 4, at 2 epochs 1 3 2 4: Σd² = 2, ρ = 1 - 6·2 / (4·(16 - 1)) = 0.8
    records = study([(0.1, 0.15), (0.2, 0.35), (0.3, 0.25), (0.4, 0.5)])
    (rho, n, why), = report.rank_correlations(records).values()
    assert rho == pytest.approx(0.8) and n == 4 and why is None


def test_a_correlation_that_cannot_be_computed_is_none_with_its_reason_not_nan():
    two = study([(0.1, 0.2), (0.3, 0.4)])
    (rho, n, why), = report.rank_correlations(two).values()
    assert rho is None and n == 2 and "only 2" in why
    flat = study([(0.1, 0.5), (0.2, 0.5), (0.3, 0.5)])  # every student equal at 2 epochs
    (rho, n, why), = report.rank_correlations(flat).values()
    assert rho is None and n == 3 and "equal" in why
    failed = study([(0.1, 0.2), (0.2, None), (0.3, 0.1), (0.4, 0.3)])  # a failed run is no pair
    (rho, n, _), = report.rank_correlations(failed).values()
    assert n == 3 and rho == pytest.approx(0.5)  # ranks 1 2 3 against 2 1 3: Σd² = 2, 1 - 12/24


def test_promoted_configurations_are_grouped_across_rungs():
    records = [record(i, 1.0, a, iteration=0, bracket=0) for i, a in enumerate((0.2, 0.5, 0.4, 0.1))]
    records += [record(i, 2.0, a, iteration=0, bracket=0, rung=1) for i, a in ((1, 0.7), (2, 0.6))]
    records += [record(0, 2.0, 0.9, iteration=0, bracket=1)]  # another bracket's index 0: not the same
    (rho, n, _), = report.rank_correlations(records).values()
    assert rho is None and n == 2


def test_fig4_uses_the_study_when_it_covers_every_pair():
    search = [record(0, 1.0, 0.3, iteration=0, bracket=0)]
    full = study([(0.1, 0.2), (0.2, 0.1), (0.3, 0.4)])
    assert report.fig4_records(search, full) == (full, "study")
    assert report.fig4_records(search, full[:4]) == (search, "promoted by BOHB")  # 2 configurations only
    assert report.fig4_records(search, []) == (search, "promoted by BOHB")


def test_paired_difference_compares_the_same_students():
    plain = study([(0.10, 0.50), (0.20, 0.60), (0.30, 0.70)])
    kd = [{**r, "config": {**r["config"], "tau": 4.0, "alpha": 0.5}} for r in study([(0.15, 0.40), (0.10, 0.70),
                                                                                      (0.40, 0.70)])]
    kd.append(record(9, 1.0, 0.99))  # a student the no-KD study lacks: not paired
    diff = report.paired_difference(kd, plain)
    mean1, wins1, n1 = diff[1.0]
    mean2, wins2, n2 = diff[2.0]
    assert n1 == n2 == 3
    assert mean1 == pytest.approx((0.05 - 0.10 + 0.10) / 3) and wins1 == 2
    assert mean2 == pytest.approx((-0.10 + 0.10 + 0.0) / 3) and wins2 == 1  # a tie is no win


def write_search(folder, no_kd, records, study_records, **settings):
    folder.mkdir(parents=True)
    settings = {"no_kd": no_kd, "dataset": "digits", "min_budget": 1.0, "max_budget": 2.0, "eta": 2, **settings}
    (folder / "search.json").write_text(json.dumps({"settings": settings}))
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "study.jsonl").write_text("".join(json.dumps(r) + "\n" for r in study_records))


def retrain_summary(no_kd, accuracies):
    """A summary.json of retrain.py: one run of each architecture (std None for one architecture)."""
    students = [{"index": i, "seed": i, "run": 0, "accuracy": a, "params": 1e5, "macs": 1e6, "memory_mb": 0.5}
                for i, a in enumerate(accuracies)]
    mean = 100 * sum(accuracies) / len(accuracies)
    return {"students": students, "mean": mean, "std": 1.0 if len(accuracies) > 1 else None, "run_std": None,
            "k": len(accuracies), "runs": len(accuracies), "no_kd": no_kd,
            "teacher": None if no_kd else {"accuracy": 0.99, "params": 2e5, "macs": 5e6, "memory_mb": 1.0}}


def write_retrain(folder, no_kd, accuracies):
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps(retrain_summary(no_kd, accuracies)))


@pytest.mark.slow
def test_report_of_two_searches_with_studies_has_no_nan(tmp_path):
    search = [record(i, 1.0, 0.2 + 0.1 * i, iteration=0, bracket=0, t=60.0 * i) for i in range(2)]
    search += [record(1, 2.0, 0.6, iteration=0, bracket=0, rung=1, t=200.0)]  # one pair: no ρ from BOHB alone
    rows = [(0.2, 0.5), (0.3, 0.4), (0.1, 0.2), (0.4, 0.8)]
    write_search(tmp_path / "kd", False, search, study(rows))
    write_search(tmp_path / "nokd", True, search, study([(a - 0.05, b - 0.1) for a, b in rows]))
    write_retrain(tmp_path / "rkd", False, [0.95, 0.97])
    write_retrain(tmp_path / "rnokd", True, [0.94, 0.93])
    r = subprocess.run([sys.executable, os.path.join(ROOT, "report.py"), str(tmp_path / "kd"), "--compare",
                        str(tmp_path / "nokd"), "--retrain", str(tmp_path / "rkd"), str(tmp_path / "rnokd"),
                        "--out", str(tmp_path / "fig")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "nan" not in r.stdout.lower()
    assert "over the study's configurations" in r.stdout and "ρ = 0.80 over 4 configurations" in r.stdout
    assert "+5.00 points on average; KD better for 4 of 4" in r.stdout            # 1 epoch: every pair +0.05
    assert "KD minus no KD: +2.50 points" in r.stdout                               # 96.0 - 93.5
    if "figures skipped" not in r.stdout:
        assert (tmp_path / "fig" / "fig4_rank_correlation.png").stat().st_size > 0


# ----------------------------------------------------------------------------------------------------
# Several searches per arm

def timed(budget, accuracy, started, finished, index=0):
    """A BOHB result that ran from `started` to `finished` seconds."""
    return {**record(index, budget, accuracy, iteration=0, bracket=0), "started": started, "finished": finished}


def searches_for_fig3():
    # A improves to 50 % at minute 1 and 70 % at 3, ends at 4; B to 60 % at 2 and 80 % at 5, ends at 6
    a = [timed(1.0, 0.5, 0, 60), timed(1.0, 0.7, 60, 180), timed(1.0, 0.6, 180, 240), timed(2.0, 0.9, 200, 240)]
    b = [timed(1.0, 0.6, 0, 120), timed(1.0, 0.8, 120, 300), timed(1.0, 0.1, 300, 360)]
    return [report.Search(Path(name), records, [], {}) for name, records in (("a", a), ("b", b))]


def test_fig3_band_is_the_mean_and_std_of_the_best_so_far_steps():
    grid, mean, std = report.best_band(searches_for_fig3(), 1.0)
    # every search has a result from minute 2 (B's first); the shorter search (A) ends at minute 4
    assert grid[0] == pytest.approx(2) and grid[-1] == pytest.approx(4)
    before = grid < 3  # A holds 50 % until minute 3, B 60 % until minute 5
    assert mean[before] == pytest.approx(0.55) and mean[~before] == pytest.approx(0.65)
    assert std == pytest.approx(np.full(len(grid), (2 * 0.05 ** 2 / 1) ** 0.5))  # sample std of two values
    assert report.best_band(searches_for_fig3(), 2.0) is None  # B never trained 2 epochs


def test_fig3_band_needs_a_time_when_every_search_has_a_result():
    late = [timed(1.0, 0.4, 0, 300), timed(2.0, 0.5, 0, 420)]  # first result at minute 5; A ends at 4
    a = searches_for_fig3()[0]
    assert report.best_band([a, report.Search(Path("late"), late, [], {})], 1.0) is None


def test_fig3_table_prints_the_band(capsys):
    arm = report.Arm("KD (AutoKD): a ... b (2 searches)", searches_for_fig3())
    report.print_fig3(arm)
    out = capsys.readouterr().out
    assert "mean ± std over 2 searches" in out
    assert "(2.0, 55.0 ± 7.1)" in out and "(4.0, 65.0 ± 7.1)" in out
    assert "2 epochs  n/a (not every search" in out


def test_fig4_spread_across_searches_against_scipy():
    rows1 = [(0.1, 0.15), (0.2, 0.35), (0.3, 0.25), (0.4, 0.5)]  # ρ = 0.8 by hand (see above)
    rows2 = [(0.1, 0.4), (0.2, 0.3), (0.3, 0.2), (0.4, 0.15), (0.5, 0.18)]
    rhos = [0.8, spearmanr(*zip(*rows2)).statistic]
    bohb_only = [record(0, 1.0, 0.3, iteration=0, bracket=0)]  # a search without a study or any pair
    searches = [report.Search(Path(str(i)), bohb_only, study(rows), {}) for i, rows in enumerate((rows1, rows2))]
    searches.append(report.Search(Path("2"), bohb_only, [], {}))
    (results,) = report.pooled_correlations(searches).values()
    assert [r for r, _, _ in results] == pytest.approx(rhos) and [n for _, n, _ in results] == [4, 5]
    text = report.rho_text(results, len(searches))
    assert text == (f"ρ = {np.mean(rhos):.2f} ± {np.std(rhos, ddof=1):.2f} across 2 of 3 searches "
                    "(4 to 5 configurations each)")
    assert report.rho_text(results[:1], 1) == "ρ = 0.80 over 4 configurations"  # one search: as before


def pooled_arm(folder, no_kd, shift, **settings):
    """folder/repeat-0 and repeat-1, as search.py --repeats 2 writes them; repeat-1 scores `shift` higher."""
    for i in range(2):
        search = [record(j, 1.0, 0.2 + 0.1 * j + i * shift, iteration=0, bracket=0, t=60.0 * j) for j in range(3)]
        search += [record(2, 2.0, 0.6 + i * shift, iteration=0, bracket=0, rung=1, t=200.0)]
        write_search(folder / f"repeat-{i}", no_kd, search, study([(0.2, 0.5), (0.3, 0.4), (0.1, 0.2)]), **settings)
    return [folder / "repeat-0", folder / "repeat-1"]


def test_fig2_pools_every_search_of_an_arm_and_the_figures_are_drawn(tmp_path, capsys):
    pooled_arm(tmp_path / "kd", False, 0.1)
    pooled_arm(tmp_path / "nokd", True, 0.0)
    (tmp_path / "kd" / "repeat-2").mkdir()  # no search.json: not a repeat
    assert report.main([str(tmp_path / "kd"), "--compare", str(tmp_path / "nokd"), "--out", str(tmp_path / "f")]) == 0
    out = capsys.readouterr().out
    assert "== KD (AutoKD): kd (2 searches): 8 evaluations, 0 failed; study: 12 evaluations of 6 configurations" in out
    # 1 epoch: each repeat 3 BOHB results and 3 study ones; KD's repeat-1 is 10 points up on BOHB's three
    accuracies = [0.2, 0.3, 0.4, 0.3, 0.4, 0.5] + 2 * [0.2, 0.3, 0.1]
    assert f"1 epochs                     12 {100 * np.mean(accuracies):>8.2f}    50.00" in out
    for name in ("fig2_histograms", "fig3_best_vs_time", "fig4_rank_correlation"):
        assert (tmp_path / "f" / f"{name}.png").stat().st_size > 0


def test_folders_listed_one_by_one_pool_as_a_parent_does(tmp_path, capsys):
    repeats = pooled_arm(tmp_path / "kd", False, 0.1)
    report.main([str(tmp_path / "kd"), "--out", str(tmp_path / "f")])
    parent = capsys.readouterr().out
    report.main([*map(str, repeats), "--out", str(tmp_path / "f")])
    listed = capsys.readouterr().out
    assert listed.replace("repeat-0 ... repeat-1 (2 searches)", "kd (2 searches)") == parent


def test_a_repeat_of_other_settings_or_a_compare_across_data_sets_is_refused(tmp_path, capsys):
    a = pooled_arm(tmp_path / "a", False, 0.1)
    pooled_arm(tmp_path / "b", True, 0.0, dataset="cifar10")
    write_search(tmp_path / "c", False, [record(0, 1.0, 0.5, iteration=0, bracket=0)], [], max_budget=4.0)
    for argv, fragment in (([tmp_path / "a", "--compare", tmp_path / "b"], "differ in dataset (digits and cifar10)"),
                           ([*a, tmp_path / "c"], "differ in max_budget (2.0 and 4.0)")):
        assert report.main([*map(str, argv), "--out", str(tmp_path / "f")]) == 1
        err = capsys.readouterr().err
        assert fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "f").exists()


def test_arms_of_different_budget_plans_are_labelled(tmp_path, capsys):
    pooled_arm(tmp_path / "a", False, 0.1)
    write_search(tmp_path / "c", True, [record(0, 1.0, 0.5, iteration=0, bracket=0)], [], max_budget=4.0)
    assert report.main([str(tmp_path / "a"), "--compare", str(tmp_path / "c"), "--out", str(tmp_path / "f")]) == 0
    assert "note: the arms ran different budget plans" in capsys.readouterr().out


def test_figures_are_skipped_with_a_note_without_matplotlib(tmp_path, capsys, monkeypatch):
    pooled_arm(tmp_path / "a", False, 0.1)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert report.main([str(tmp_path / "a"), "--out", str(tmp_path / "f")]) == 0
    assert "figures skipped: matplotlib is not installed" in capsys.readouterr().out and not (tmp_path / "f").exists()


# ----------------------------------------------------------------------------------------------------
# Retrainings of one architecture, malformed logs

def test_table1_of_one_architecture_says_so_instead_of_a_spread(capsys):
    report.print_tables([], [(retrain_summary(False, [0.95]), "one"), (retrain_summary(True, [0.94, 0.92]), "two")])
    out = capsys.readouterr().out
    assert "n/a (1 architecture)" in out and "nan" not in out.lower()
    assert "KD minus no KD: +2.00 points (spread across architectures n/a (1 architecture) with KD, ± 1.00" in out


GOOD = record(0, 1.0, 0.9, iteration=0, bracket=0)
BAD_RECORDS = [
    ({}, "is not a search result: field iteration is missing"),
    ({**GOOD, "loss": "abc"}, "loss must be a number in [0, 1] or null, not \"abc\""),
    ({**GOOD, "loss": float("nan")}, "loss must be a number in [0, 1] or null, not NaN"),
    ({**GOOD, "info": {"accuracy": "0.9"}}, "info.accuracy must be a number in [0, 1]"),
    ({**GOOD, "info": {"accuracy": 1.5}}, "info.accuracy must be a number in [0, 1]"),
    ({**GOOD, "info": {"accuracy": True}}, "info.accuracy must be"),
    ({**GOOD, "info": {}}, "info.accuracy is missing"),
    ({**GOOD, "info": ["x"]}, "info must be a JSON object"),
    ({**GOOD, "info": {"accuracy": 0.9, "arch_seed": "7"}}, "info.arch_seed must be a whole number"),
    ({**GOOD, "budget": 0}, "budget must be a number > 0"),
    ({**GOOD, "budget": "1"}, "budget must be a number > 0"),
    ({**GOOD, "index": 1.5}, "index must be a whole number >= 0"),
    ({**GOOD, "finished": None}, "finished must be a number, not null"),
    ({**GOOD, "config": "x" * 100}, "config must be a JSON object, not \"" + "x" * 56 + "..."),
]


@pytest.mark.parametrize("bad,fragment", BAD_RECORDS, ids=[f for _, f in BAD_RECORDS])
def test_a_malformed_record_names_file_line_and_field_and_is_never_counted(bad, fragment, tmp_path, capsys):
    folder = tmp_path / "s"
    failed = {**GOOD, "loss": None, "error": "boom", "info": {}}  # a failure is a valid record
    write_search(folder, False, [GOOD, failed, bad], [])
    assert report.main([str(folder), "--out", str(tmp_path / "f")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {folder / 'results.jsonl'} line 3") and fragment in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "f").exists()


def test_a_job_run_again_after_a_transient_failure_counts_once(tmp_path, capsys):
    """bohb.py logs a transient failure, then its retry on resume: the last attempt is the evaluation."""
    lost = {**GOOD, "index": 1, "loss": None, "error": "MemoryError", "info": {}, "cause": "transient", "attempt": 1}
    retried = {**GOOD, "index": 1, "attempt": 2}
    study_lost = {**record(0, 1.0, None), "cause": "transient", "attempt": 1}
    write_search(tmp_path / "s", False, [GOOD, lost, retried], [study_lost, {**record(0, 1.0, 0.8), "attempt": 2}])
    assert report.read_records(tmp_path / "s" / "results.jsonl") == [GOOD, retried]
    assert report.main([str(tmp_path / "s"), "--out", str(tmp_path / "f")]) == 0
    assert "2 evaluations, 0 failed; study: 1 evaluations of 1 configurations" in capsys.readouterr().out


def test_a_search_json_that_is_no_record_is_refused(tmp_path, capsys):
    write_search(tmp_path / "s", False, [GOOD], [])
    (tmp_path / "s" / "search.json").write_text("[]")
    assert report.main([str(tmp_path / "s")]) == 1
    assert "is not a search.json of search.py" in capsys.readouterr().err
