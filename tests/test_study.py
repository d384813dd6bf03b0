"""search.py's box (--max-nodes) and its study for Fig. 4 (--study): what is drawn, without training;
the refusals of bad values; and a study run on the CPU that resumes and grows without retraining."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import generator  # noqa: E402
import kd_loss  # noqa: E402
import search  # noqa: E402

SMALL = ["--dataset", "digits", "--min-budget", "1", "--max-budget", "2", "--iterations", "1", "--max-params", "60000",
         "--max-nodes", "4", "--gpus", "0", "--workers", "2", "--no-kd"]


def settings(**changes):
    return SimpleNamespace(**{"seed": 0, "no_kd": False, "max_nodes": 5, "study": 6, **changes})


def test_the_box_caps_every_level_and_keeps_the_rest_of_nagos_ranges():
    box = search.box(settings(max_nodes=4))
    for name, (kind, low, high) in generator.SPACE.items():
        assert box[name] == ((kind, low, 4) if name in ("top_nodes", "mid_nodes", "bottom_nodes") else (kind, low, high))
    assert {k: box[k] for k in kd_loss.SPACE} == kd_loss.SPACE
    assert set(search.box(settings(no_kd=True))) == set(generator.SPACE)


def test_the_study_trains_each_configuration_at_every_budget_in_the_box():
    jobs = search.study_jobs(settings(), [1.0, 2.0, 4.0])
    assert len(jobs) == 6 * 3
    for index in range(6):
        mine = [j for j in jobs if j["index"] == index]
        assert [j["budget"] for j in mine] == [1.0, 2.0, 4.0] and [j["rung"] for j in mine] == [0, 1, 2]
        assert all(j["config"] == mine[0]["config"] and j["arch_seed"] == mine[0]["arch_seed"] for j in mine)
        config = mine[0]["config"]
        assert all(3 <= config[k] <= 5 for k in ("top_nodes", "mid_nodes", "bottom_nodes"))
        assert 1 <= config["tau"] <= 10 and 0 <= config["alpha"] <= 1
    assert len({json.dumps(j["config"], sort_keys=True) for j in jobs}) == 6  # six different configurations
    assert len({j["arch_seed"] for j in jobs}) == 6


def test_kd_and_no_kd_studies_of_one_seed_train_the_same_students():
    kd, plain = search.study_jobs(settings(), [1.0]), search.study_jobs(settings(no_kd=True), [1.0])
    for a, b in zip(kd, plain):
        assert {k: a["config"][k] for k in generator.SPACE} == b["config"] and set(b["config"]) == set(generator.SPACE)
        assert a["arch_seed"] == b["arch_seed"]
    other = search.study_jobs(settings(seed=1), [1.0])
    assert [j["config"] for j in other] != [j["config"] for j in kd]


def test_a_study_grows_from_its_log(tmp_path):
    """search.study_jobs(N) starts with the jobs of a smaller N, so --study 4 after --study 3 adds one."""
    three, four = search.study_jobs(settings(study=3), [1.0]), search.study_jobs(settings(study=4), [1.0])
    assert four[:3] == three
    log = tmp_path / "study.jsonl"
    log.write_text("".join(json.dumps({**job, "loss": 0.5, "error": None, "info": {"accuracy": 0.5},
                                       "started": 0, "finished": 1}) + "\n" for job in three))
    assert search.study_left(four, log) == four[3:]


def test_a_study_job_that_failed_for_a_transient_cause_runs_once_more(tmp_path):
    """study_left, as BOHB.run: a transient failure is left as its second attempt; a deterministic one,
    or a transient one already retried, is final."""
    jobs = search.study_jobs(settings(study=4), [1.0])
    log = tmp_path / "study.jsonl"

    def failed(job, cause, attempt):
        return {**job, "loss": None, "error": "x", "cause": cause, "attempt": attempt, "info": {}, "started": 0,
                "finished": 1}

    lines = [failed(jobs[0], "transient", 1), failed(jobs[1], "deterministic", 1), failed(jobs[2], "transient", 1),
             failed(jobs[2], "transient", 2)]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert search.study_left(jobs, log) == [{**jobs[0], "attempt": 2}, jobs[3]]


def cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "search.py"), *args], capture_output=True, text=True,
                          cwd=ROOT)


@pytest.mark.slow
def test_max_nodes_outside_nagos_range_is_refused(tmp_path):
    for bad in ("3", "11"):
        r = cli("--dataset", "digits", "--no-kd", "--max-nodes", bad, "--out", str(tmp_path / "o"))
        assert r.returncode != 0 and "--max-nodes" in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_study_runs_after_the_search_and_a_rerun_trains_nothing(tmp_path):
    out = tmp_path / "search"
    r = cli(*SMALL, "--study", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    study = [json.loads(line) for line in (out / "study.jsonl").read_text().splitlines()]
    assert len(results) == 5  # Alg. 1's plan for budgets 1 -> 2 alone: the study is not BOHB's
    assert sorted((r["index"], r["budget"]) for r in study) == [(i, b) for i in range(3) for b in (1.0, 2.0)]
    assert all(r["error"] is None and r["origin"] == "study" for r in study)
    for index in range(3):  # one architecture per configuration, trained at both budgets
        seeds = {r["info"]["arch_seed"] for r in study if r["index"] == index}
        assert len(seeds) == 1
    best = json.loads((out / "best.json").read_text())
    assert best["accuracy"] == max(r["info"]["accuracy"] for r in results if r["budget"] == 2.0)
    again = cli(*SMALL, "--study", "3", "--out", str(out))
    assert again.returncode == 0 and "nothing to run" in again.stdout
    assert [json.loads(line) for line in (out / "study.jsonl").read_text().splitlines()] == study
