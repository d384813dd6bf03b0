"""report.py's numbers against hand computations: Spearman's ρ of Fig. 4, its refusals (never nan),
the study chosen over BOHB's promoted few, the paired KD - no KD differences; and the report of two
searches with studies and two retrainings runs without a nan anywhere."""
import json
import os
import subprocess
import sys

import pytest

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


def write_search(folder, no_kd, records, study_records):
    folder.mkdir()
    (folder / "search.json").write_text(json.dumps({"settings": {"no_kd": no_kd}}))
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "study.jsonl").write_text("".join(json.dumps(r) + "\n" for r in study_records))


def write_retrain(folder, no_kd, accuracies):
    folder.mkdir()
    students = [{"index": i, "seed": i, "run": 0, "accuracy": a, "params": 1e5, "macs": 1e6, "memory_mb": 0.5}
                for i, a in enumerate(accuracies)]
    mean = 100 * sum(accuracies) / len(accuracies)
    (folder / "summary.json").write_text(json.dumps({
        "students": students, "mean": mean, "std": 1.0, "k": len(accuracies), "no_kd": no_kd,
        "teacher": None if no_kd else {"accuracy": 0.99, "params": 2e5, "macs": 5e6, "memory_mb": 1.0}}))


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
