"""The benchmark scripts run (tiny sizes on the CPU), so that they cannot rot; they assert nothing
about speed."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # every test runs a bench script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_section_and_writes_outside_the_repository(tmp_path):
    """bench/gpu_check.py --cpu-smoke: every section runs (none skipped or failed), each figure is in
    gpu_check.jsonl, and without --out the figures go to a temporary folder, not the working tree."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--cpu-smoke", "--budget-s",
                        "3600", "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, timeout=900,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout.split("figures -> ", 1)[1].splitlines()[0]
    assert not os.path.abspath(out).startswith(ROOT + os.sep) and not os.path.exists(os.path.join(ROOT, "gpu_check"))
    rows = [json.loads(line) for line in open(os.path.join(out, "gpu_check.jsonl"))]
    assert [row["what"] for row in rows if row["section"] == "skipped"] == []
    sections = {row["section"] for row in rows}
    assert {"profile", "correct", "levers", "search", "kd", "course"} <= sections
    figures = {row["what"]: row["value"] for row in rows}
    assert figures["captured vs eager: step 1 |Δloss|"] == "0.00e+00"  # on the CPU both run eagerly
    assert any(w.startswith("search.py: 1/1 evaluations succeeded") for w in figures)
    assert "| levers |" in r.stdout  # the markdown table


def test_kd_cifar_analysis_against_hand_computed_statistics():
    """Paired differences, the sign test and Spearman's ρ of bench/kd_cifar.py against values worked
    out by hand: 4 students, KD ahead in all 4 pairs at 1 epoch (p = 2 / 2^4) and in 2 of 3 at 2 epochs
    (a tie dropped); the KD arm ranks alike at both budgets, the no-KD arm nearly in reverse."""
    kd_cifar = load_script("kd_cifar")
    table = {(s, 1.0, 0.9): [0.30, 0.40, 0.50, 0.60][s] for s in range(4)}
    table.update({(s, 1.0, 0.0): [0.20, 0.35, 0.45, 0.50][s] for s in range(4)})
    table.update({(s, 2.0, 0.9): [0.50, 0.60, 0.70, 0.80][s] for s in range(4)})
    table.update({(s, 2.0, 0.0): [0.70, 0.60, 0.30, 0.40][s] for s in range(4)})
    table.update({(0, 2.0, 0.5): 0.55})
    rows = [{"student": s, "budget": b, "alpha": a, "accuracy": v} for (s, b, a), v in table.items()]
    result = kd_cifar.analyse(rows, [1.0, 2.0], [0.0, 0.5, 0.9, 1.0])
    one, two = result["paired"]
    assert one["pairs"] == 4 and (one["kd_wins"], one["kd_losses"]) == (4, 0)
    assert one["mean_diff"] == pytest.approx((0.10 + 0.05 + 0.05 + 0.10) / 4)
    assert one["sign_test_p"] == pytest.approx(2 / 2 ** 4)
    assert (two["kd_wins"], two["kd_losses"]) == (2, 1) and two["sign_test_p"] == pytest.approx(1.0)
    rho = {r["arm"]: r["rho"] for r in result["spearman"]}
    # no KD: ranks 1 2 3 4 at 1 epoch, 4 3 1 2 at 2: ρ = 1 - 6·Σd²/(n(n²-1)) = 1 - 6·18/60
    assert rho["KD"] == pytest.approx(1.0) and rho["no KD"] == pytest.approx(-0.8)
    assert [r["accuracy"] for r in result["alpha"]] == [0.70, 0.55, 0.50, None]


def load_script(name):
    """A bench script as a module (bench/ is no package)."""
    import importlib.util
    sys.path.insert(0, ROOT)
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bn_recalibration_smoke(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bn_recalibration.py"), "--students", "1",
                        "--budgets", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| 1 epoch(s) |" in r.stdout and "of the training time of one epoch" in r.stdout


@pytest.mark.slow
def test_search_protocols_smoke():
    """bench/search_protocols.py on 3 tiny students, budgets 1 against 2 epochs: both protocols train
    every student at every budget and the table names both, with ρ and the paired difference."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "search_protocols.py"), "--students", "3",
                        "--short", "1", "--long", "2", "--max-nodes", "4", "--max-params", "3e4", "--workers", "2"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("epoch(s):") == 3 * 2 * 2  # students x budgets x protocols
    assert "| darts | " in r.stdout and "| nago | " in r.stdout and "| 1 epoch(s), nago − darts | " in r.stdout
    assert "nago: batch 16, lr 0.0125, step, no clipping" in r.stdout


def test_search_protocols_table_against_hand_ranks():
    """Four students: darts's 1-epoch ranks equal both long rankings (ρ = 1), nago's reverse them
    (ρ = −1), so nago − darts is −2 against every reference; the mean accuracies are by hand."""
    bench = load_script("search_protocols")
    long = {"darts": [0.5, 0.6, 0.7, 0.8], "nago": [0.4, 0.6, 0.8, 0.9]}
    short = {"darts": [0.1, 0.2, 0.3, 0.4], "nago": [0.4, 0.3, 0.2, 0.1]}
    rows = [{"protocol": p, "budget": b, "student": i, "accuracy": acc[p][i]}
            for b, acc in ((1, short), (8, long)) for p in ("darts", "nago") for i in range(4)]
    text = bench.table("t", rows, [1], 8, 4, 0)
    assert "| darts | 25.0 % | 65.0 % |" in text and "| nago | 25.0 % | 67.5 % |" in text
    lines = {line.split(" | ")[0]: line for line in text.splitlines()}
    assert lines["| 1 epoch(s), darts"].count("1.00 (1.00 to 1.00)") == 3
    assert lines["| 1 epoch(s), nago"].count("-1.00 (-1.00 to -1.00)") == 3
    assert lines["| 1 epoch(s), nago − darts"].count("-2.00 (-2.00 to -2.00)") == 3


def test_course_smoke_runs_the_quick_start_commands(tmp_path):
    """bench/course.py --smoke: the README's quick start commands in order, at tiny sizes, with a
    one-epoch teacher; the two studies train the same students and the report shows no nan."""
    teacher = tmp_path / "teacher.pt"
    assert subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--arch", "darts", "--dataset", "digits",
                           "--split", "final", "--width", "4", "--layers", "3", "--epochs", "1", "--no-auxiliary",
                           "--save", str(teacher)], capture_output=True, timeout=600).returncode == 0
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "course.py"), "--smoke", "--teacher", str(teacher),
                        "--out", str(tmp_path / "runs")], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "quickstart:" in r.stdout and "| **all** |" in r.stdout
    runs = tmp_path / "runs"
    kd, plain = ([json.loads(line) for line in (runs / name / "study.jsonl").read_text().splitlines()]
                 for name in ("search-digits", "search-digits-nokd"))
    assert len(kd) == len(plain) == 6  # 3 configurations x budgets 1 and 2
    assert {(r["index"], r["info"]["arch_seed"]) for r in kd} == {(r["index"], r["info"]["arch_seed"]) for r in plain}
    assert "nan" not in r.stdout.lower() and "KD minus no KD" in r.stdout
    assert json.loads((runs / "retrain-digits-nokd" / "summary.json").read_text())["no_kd"]
    if "figures skipped" not in r.stdout:
        for name in ("fig2_histograms", "fig3_best_vs_time", "fig4_rank_correlation", "fig6_accuracy_vs_memory"):
            assert (runs / "figures" / f"{name}.png").stat().st_size > 0


def test_the_cifar10_course_commands_parse():
    """The course run needs a GPU and CIFAR-10, so no test runs it; its commands at least name flags
    and values that their scripts accept (parsed by each script's own parser)."""
    sys.path.insert(0, ROOT)
    import retrain
    import search
    import train
    course = load_script("course")
    stages = course.commands("cifar10", "runs", ["--download"])
    assert [stage for stage, _ in stages] == ["data", "teacher", "KD search", "no-KD search", "retrain with KD",
                                              "retrain without KD", "report"]
    parsers = {"train.py": train.parser, "search.py": search.parser, "retrain.py": retrain.parser}
    for _, argv in stages:
        if argv[0] in parsers:
            parsers[argv[0]]().parse_args(argv[1:])  # exits (SystemExit) on an unknown flag or a bad value
    search_args = search.parser().parse_args(stages[2][1][1:])
    assert (search_args.min_budget, search_args.max_budget, search_args.study, search_args.max_nodes) == (1, 4, 10, 5)
    assert search_args.repeats == 1
    # --repeats N: both searches run N repeats, and the retrainings read the best of them, OUT/best.json
    stages = dict(course.commands("quickstart", "runs", repeats=3))
    for name in ("teacher + KD search", "no-KD search"):
        assert search.parser().parse_args(stages[name][1:]).repeats == 3
    assert retrain.parser().parse_args(stages["retrain with KD"][1:]).theta == "runs/search-digits/best.json"
