"""bohb.py against independent references: Alg. 1's bracket tables computed by hand (and Li et al.'s
Table 1), brute-force promotion checks on the log, a KDE summed kernel by kernel with scipy.stats, and a
run killed with SIGKILL and resumed against an uninterrupted one. CPU only, a few seconds."""
import concurrent.futures as cf
import functools
from concurrent.futures.process import BrokenProcessPool
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import bohb  # noqa: E402

SPACE = {"a": (float, 0.0, 1.0), "b": (int, 1, 8), "c": (float, 1e-3, 1.0, "log"), "d": (int, 1, 64, "log")}


def bowl(config, budget, job=None):
    """A smooth deterministic loss whose ranking shifts a little with the budget."""
    return {"loss": (config["a"] - 0.3) ** 2 + (config["b"] - 5) ** 2 / 50
            + math.log(config["c"] / 0.01) ** 2 / 20 + math.log2(config["d"] / 8) ** 2 / 40 + 1 / budget}


def run_sequentially(optimiser, objective, n_iterations):
    while (job := optimiser.ask(n_iterations)) is not None:
        optimiser.tell({**job, **objective(job["config"], job["budget"], job)})
    return optimiser.history


# ------------------------------------------------------------------------------------------------
# Brackets (Alg. 1 lines 2-9)

@pytest.mark.parametrize("min_budget, max_budget, eta, table", [
    # the paper's setting, by hand: s_max = 2; n = ceil(3/3*4) = 4, ceil(3/2*2) = 3, ceil(3/1*1) = 3
    (30, 120, 2, [[(4, 30), (2, 60), (1, 120)], [(3, 60), (1, 120)], [(3, 120)]]),
    # Li et al. (JMLR 2018) Table 1: R = 81, eta = 3
    (1, 81, 3, [[(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)], [(34, 3), (11, 9), (3, 27), (1, 81)],
                [(15, 9), (5, 27), (1, 81)], [(8, 27), (2, 81)], [(5, 81)]]),
    # s_max = 3: ceil(4/4*27) = 27, ceil(4/3*9) = 12, ceil(4/2*3) = 6, ceil(4/1*1) = 4
    (1, 27, 3, [[(27, 1), (9, 3), (3, 9), (1, 27)], [(12, 3), (4, 9), (1, 27)], [(6, 9), (2, 27)], [(4, 27)]]),
    # 120 / 30 = 4 is not a power of 3: s_max = floor(log_3 4) = 1, budgets 120 / 3 = 40 and 120
    (30, 120, 3, [[(3, 40), (1, 120)], [(2, 120)]]),
    # a range that is not a power of eta: s_max = floor(log_2 3.33) = 1
    (30, 100, 2, [[(2, 50), (1, 100)], [(2, 100)]]),
    (5, 5, 2, [[(1, 5)]]),
])
def test_bracket_plan_matches_alg1(min_budget, max_budget, eta, table):
    plan = bohb.bracket_plan(min_budget, max_budget, eta)
    assert [[(n, pytest.approx(b)) for n, b in bracket] for bracket in plan] == table
    assert all(isinstance(n, int) for bracket in plan for n, _ in bracket)


def test_bracket_plan_counts_s_max_exactly():
    # log(243) / log(3) = 4.999... in floating point, yet 243 = 3^5: six brackets, the first from budget 1
    plan = bohb.bracket_plan(1, 243, 3)
    assert len(plan) == 6 and plan[0][0] == (243, 1.0) and plan[0][-1] == (1, 243.0)


@pytest.mark.parametrize("eta, low, high", [(1, 30, 120), (2.5, 30, 120), (2, 0, 120), (2, 120, 30)])
def test_bracket_plan_refuses_bad_settings(eta, low, high):
    with pytest.raises(ValueError):
        bohb.bracket_plan(low, high, eta)


def test_promotion_keeps_exactly_the_best():
    bracket = bohb.Bracket(0, 0, [(6, 1), (3, 3), (1, 9)])
    for index, loss in enumerate([0.5, 0.1, math.inf, 0.1, 0.7, 0.2]):
        bracket.record(index, {"i": index}, loss)
    assert bracket.todo == [1, 3, 5]  # the three lowest losses, a tie taken in index order
    for index, loss in zip([1, 3, 5], [0.3, 0.3, 0.2]):
        bracket.record(index, {"i": index}, loss)
    assert bracket.todo == [5]


def test_a_failed_configuration_is_never_promoted():
    """Fewer successes than places on the next rung: the rung runs with fewer; none: the bracket ends."""
    bracket = bohb.Bracket(0, 0, [(4, 1), (2, 2), (1, 4)])
    for index, loss in enumerate([math.inf, 0.3, math.inf, math.inf]):
        bracket.record(index, {"i": index}, loss)
    assert bracket.todo == [1] and bracket.size == 1  # one success for two places
    bracket.record(1, {"i": 1}, math.inf)
    assert bracket.done  # nothing finite left to promote
    optimiser = bohb.BOHB(SPACE, 1, 4, eta=2, seed=0)
    jobs = [optimiser.ask(1) for _ in range(4)]
    for job, loss in zip(jobs, [None, float("nan"), 0.2, math.inf]):
        optimiser.tell({**job, "loss": loss})
    promoted = optimiser.ask(1)
    assert promoted["rung"] == 1 and promoted["index"] == 2 and promoted["origin"] == "promoted"
    assert optimiser.ask(1)["bracket"] == 1  # the second place stays empty: the next bracket starts


def test_driver_promotes_the_best_of_each_rung_in_the_log(tmp_path):
    log = tmp_path / "results.jsonl"
    optimiser = bohb.BOHB(SPACE, 1, 9, eta=3, seed=1)
    with cf.ThreadPoolExecutor(3) as executor:
        optimiser.run(bowl, executor, 2, log_path=str(log))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    rungs = {}
    for r in records:
        rungs.setdefault((r["iteration"], r["bracket"], r["rung"]), {})[r["index"]] = r
    for (iteration, number, rung), members in rungs.items():
        assert len(members) == optimiser.plan[number][rung][0]
        if rung > 0:  # brute force: rank the rung below by loss and take as many as this rung holds
            below = rungs[iteration, number, rung - 1]
            best = sorted(below, key=lambda i: (below[i]["loss"], i))[:len(members)]
            assert sorted(members) == sorted(best)
            assert all(members[i]["config"] == below[i]["config"] for i in members)
    assert len(records) == 2 * sum(n for bracket in optimiser.plan for n, _ in bracket)


def test_a_waiting_bracket_lets_the_next_one_start_and_resumes_first():
    optimiser = bohb.BOHB(SPACE, 1, 9, eta=3, seed=0)  # brackets 9 @ 1 -> 3 @ 3 -> 1 @ 9; 5 @ 3 -> ...
    first_rung = [optimiser.ask(1) for _ in range(9)]
    waiting = optimiser.ask(1)  # rung 0 of bracket 0 is all in flight: bracket 1 starts
    assert (waiting["bracket"], waiting["rung"], waiting["budget"]) == (1, 0, 3.0)
    for job in first_rung:
        optimiser.tell({**job, **bowl(job["config"], job["budget"])})
    promoted = optimiser.ask(1)  # the oldest bracket with work goes first
    assert (promoted["bracket"], promoted["rung"], promoted["origin"]) == (0, 1, "promoted")
    rest = [optimiser.ask(1) for _ in range(2 + 4 + 3)]  # bracket 0 rung 1, bracket 1 rung 0, bracket 2
    assert [j["bracket"] for j in rest] == [0, 0, 1, 1, 1, 1, 2, 2, 2] and optimiser.ask(1) is None


def test_the_driver_keeps_every_worker_busy():
    lock, running, most = threading.Lock(), [0], [0]

    def slow(config, budget, job):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return bowl(config, budget)

    with cf.ThreadPoolExecutor(4) as executor:
        history = bohb.BOHB(SPACE, 1, 9, eta=3, seed=0).run(slow, executor, 1)
    assert most[0] == 4 and len(history) == 22


# ------------------------------------------------------------------------------------------------
# Space and model

def test_proposals_stay_in_bounds_and_integers_are_integral():
    optimiser = bohb.BOHB(SPACE, 1, 9, eta=3, seed=0, random_fraction=0.0)
    rng = np.random.default_rng(5)
    for x in rng.random((40, 4)):
        config = optimiser.space.decode(x)
        optimiser.observe(config, 9.0, bowl(config, 9)["loss"])
    proposals = [optimiser.propose() for _ in range(200)]
    assert {origin for _, origin in proposals} == {"model@9"}
    for config, _ in proposals + [(optimiser.space.decode(x), "random") for x in ([0.0] * 4, [1.0] * 4)]:
        for name, (kind, low, high, *_) in SPACE.items():
            assert type(config[name]) is kind and low <= config[name] <= high


@pytest.mark.parametrize("spec", [(int, 1.5, 3), (float, 0.0, 1.0, "lin"), (float, 0.0, 1.0, "log"),
                                  (str, 0, 1), (float, 1.0), (int, 3, 3), 5])
def test_a_malformed_space_is_refused_in_one_sentence(spec):
    with pytest.raises(ValueError, match="should be"):
        bohb.Space({"a": spec})


def test_integers_get_equal_shares_and_survive_a_round_trip():
    space = bohb.Space({"n": (int, 3, 10), "k": (int, 2, 5)})
    draws = [space.decode(x) for x in np.random.default_rng(0).random((8000, 2))]
    counts = np.bincount([d["n"] for d in draws], minlength=11)[3:]
    assert counts.min() > 0.8 * 8000 / 8 and counts.max() < 1.2 * 8000 / 8
    for config in draws[:50]:
        assert space.decode(space.encode(config)) == config


def test_log_density_matches_a_kernel_by_kernel_sum():
    rng = np.random.default_rng(0)
    points, x, bandwidth = rng.random((7, 3)), rng.random((5, 3)), np.array([0.1, 0.2, 0.05])
    reference = [np.mean([np.prod(norm.pdf(xi, loc=p, scale=bandwidth)) for p in points]) for xi in x]
    assert np.allclose(np.exp(bohb.log_density(x, points, bandwidth)), reference)


def test_good_and_bad_sets_follow_the_reference_rules():
    x = np.random.default_rng(0).random((20, 3))
    assert bohb.fit_densities(x[:7], np.arange(7.0), 15, 1e-3) is None  # bad set of 3 = d points: no model
    (good, good_bw), (bad, _) = bohb.fit_densities(x, np.arange(20.0)[::-1], 15, 1e-3)
    assert np.array_equal(good, x[::-1][:4]) and len(bad) == 16  # d + 1 = 4 > 15 % of 20 = 3 lowest losses
    assert np.allclose(good_bw, 1.06 * good.std(axis=0) * 4 ** (-1 / 7))
    constant = np.zeros((8, 2))
    assert np.all(bohb.normal_reference_bandwidth(constant, 1e-3) == 1e-3)


def test_model_based_proposals_beat_random_ones():
    space = {f"x{i}": (float, 0.0, 1.0) for i in range(4)}

    def sphere(config):
        return sum((v - 0.3) ** 2 for v in config.values())

    model, uniform = (bohb.BOHB(space, 1, 1, seed=0, random_fraction=f) for f in (0.0, 1.0))
    for x in np.random.default_rng(1).random((60, 4)):
        for optimiser in (model, uniform):
            config = optimiser.space.decode(x)
            optimiser.observe(config, 1.0, sphere(config))
    model_losses = [sphere(model.propose()[0]) for _ in range(40)]
    random_losses = [sphere(uniform.propose()[0]) for _ in range(40)]
    assert np.mean(model_losses) < 0.5 * np.mean(random_losses)


def test_same_seed_same_search_other_seed_other_search():
    def configs(seed):
        return [r["config"] for r in run_sequentially(bohb.BOHB(SPACE, 1, 9, eta=3, seed=seed), bowl, 3)]
    first = configs(0)
    assert first == configs(0) and first != configs(1)
    assert len(first) == 3 * 22


# ------------------------------------------------------------------------------------------------
# Driver: failures, log, resume

def flaky(config, budget, job):
    if config["a"] > 0.7:
        raise RuntimeError("out of memory (simulated)")
    if config["a"] < 0.2:
        return {"loss": float("nan")}
    return bowl(config, budget)


class DeadWorkerExecutor(cf.ThreadPoolExecutor):
    """Every fifth future fails the way a killed worker process's future does."""

    def __init__(self):
        super().__init__(2)
        self.count = 0

    def submit(self, fn, *args):
        self.count += 1
        if self.count % 5:
            return super().submit(fn, *args)
        future = cf.Future()
        future.set_exception(BrokenProcessPool("a worker died"))
        return future


def test_failures_are_logged_as_inf_and_the_search_goes_on(tmp_path):
    log = tmp_path / "results.jsonl"
    optimiser = bohb.BOHB(SPACE, 1, 9, eta=3, seed=0)
    with DeadWorkerExecutor() as executor:
        history = optimiser.run(flaky, executor, 2, log_path=str(log))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == len(history) == 2 * 22
    errors = [r["error"] for r in records if r["loss"] is None]
    assert any("out of memory" in e for e in errors) and any("non-finite" in e for e in errors)
    assert any("a worker died" in e for e in errors)
    assert all(r["error"] is None for r in records if r["loss"] is not None)
    assert all(math.isinf(h["loss"]) for h in history if h["error"])
    assert math.isfinite(optimiser.incumbent()["loss"])


def dies_once(marker, config, budget, job):
    if bohb.job_key(job) == (0, 0, 0, 3) and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)  # the worker process dies, as it would on a segfault or an out-of-memory kill
    return bowl(config, budget)


def test_a_dead_worker_process_is_logged_and_the_run_resumes(tmp_path):
    """The killed process's evaluation is a transient failure: the resumed run trains it once more."""
    log, objective = tmp_path / "results.jsonl", functools.partial(dies_once, str(tmp_path / "died"))
    with pytest.raises(BrokenProcessPool), cf.ProcessPoolExecutor(2) as executor:
        bohb.BOHB(SPACE, 1, 9, eta=3, seed=0).run(objective, executor, 1, log_path=str(log))
    failed = [r for r in read_lines(log) if bohb.job_key(r) == (0, 0, 0, 3)]
    assert failed[0]["loss"] is None and "terminated abruptly" in failed[0]["error"]
    assert (failed[0]["cause"], failed[0]["attempt"]) == ("transient", 1)
    with cf.ProcessPoolExecutor(2) as executor:
        history = bohb.BOHB(SPACE, 1, 9, eta=3, seed=0).run(objective, executor, 1, log_path=str(log))
    records = read_lines(log)
    assert len(history) == len(bohb.latest(records)) == 22
    again = [r for r in records if bohb.job_key(r) == (0, 0, 0, 3)]
    assert len(again) == 2 and again[-1]["attempt"] == 2 and again[-1]["loss"] is not None


# ------------------------------------------------------------------------------------------------
# Transient failures: run once more on resume (Ray Tune's resume_errored), then final

class RayActorError(Exception):
    """Named as Ray's is: the classifier reads class names, so Ray need not be installed."""


@pytest.mark.parametrize("error", [
    MemoryError(), RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: out of memory"), RuntimeError("DefaultCPUAllocator: not enough memory: you tried "
                                                            "to allocate 1073741824 bytes"),
    OSError(12, "Cannot allocate memory"), BrokenProcessPool("a process terminated abruptly"),
    RayActorError("The actor died unexpectedly before finishing this task."),
    RuntimeError("DataLoader worker (pid 123) is killed by signal: Killed."),
])
def test_failures_of_the_machine_are_transient(error):
    assert bohb.failure_cause(error) == "transient"


def test_the_pool_errors_are_transient_and_a_cause_is_found_where_it_was_raised_from():
    from machinery.executor import RemoteError, WorkerDied
    assert bohb.failure_cause(WorkerDied("the worker process on cpu died (exit code -9)")) == "transient"
    assert bohb.failure_cause(RemoteError("the worker on cpu could not start: MemoryError: ")) == "transient"
    try:
        try:
            raise MemoryError()
        except MemoryError as e:
            raise RuntimeError("training failed") from e
    except RuntimeError as chained:
        assert bohb.failure_cause(chained) == "transient"


@pytest.mark.parametrize("error", [
    RuntimeError("the training loss became nan in epoch 3; lower --lr or try another configuration"),
    ValueError("θ['top_p'] = 2 is outside its range [0.1, 1.0]."), KeyError("top_nodes"), ZeroDivisionError(),
    RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x10 and 12x10)"),
])
def test_failures_of_the_configuration_are_deterministic(error):
    assert bohb.failure_cause(error) == "deterministic"


ONLY_RUNG = (0, 2, 0, 1)  # budgets 1 -> 4, eta 2: bracket 2 is one rung (3 @ 4), so a retry changes no promotion


def failing(error, times, calls, key=ONLY_RUNG):
    """bowl, but job `key` raises `error` on its first `times` calls; every call's key in `calls`."""
    failed = []

    def objective(config, budget, job):
        calls.append(bohb.job_key(job))
        if bohb.job_key(job) == key and len(failed) < times:
            failed.append(job)
            raise error
        return bowl(config, budget)
    return objective


def search(log, objective):
    with cf.ThreadPoolExecutor(2) as executor:
        return bohb.BOHB(SPACE, 1, 4, eta=2, seed=0).run(objective, executor, 1, log_path=str(log))


def test_a_transient_failure_is_run_once_more_on_resume(tmp_path):
    log, calls = tmp_path / "results.jsonl", []
    objective = failing(MemoryError(), 1, calls)
    search(log, objective)
    first = read_lines(log)
    failed = [r for r in first if bohb.job_key(r) == ONLY_RUNG]
    assert len(failed) == 1 and failed[0]["loss"] is None and "MemoryError" in failed[0]["error"]
    assert (failed[0]["cause"], failed[0]["attempt"]) == ("transient", 1)
    assert all(r["cause"] is None and r["attempt"] == 1 for r in first if bohb.job_key(r) != ONLY_RUNG)
    calls.clear()
    history = search(log, objective)
    assert calls == [ONLY_RUNG]  # the retry alone; the finished jobs are read from the log
    after = read_lines(log)
    assert after[:len(first)] == first and len(after) == len(first) + 1
    retried = after[-1]
    assert (retried["attempt"], retried["cause"], retried["config"]) == (2, None, failed[0]["config"])
    assert retried["loss"] == bowl(retried["config"], 4)["loss"]
    assert len(history) == len(bohb.latest(after)) == 14 and math.isfinite(history[-1]["loss"])
    calls.clear()
    search(log, objective)
    assert calls == [] and read_lines(log) == after  # then the search is complete


def test_a_retry_on_a_lower_rung_promotes_by_its_new_result(tmp_path):
    """A retried rung-0 job takes part in its rung's promotion: the resumed history promotes the best of
    every rung (checked by brute force), whatever the first run had promoted without it."""
    log = tmp_path / "results.jsonl"
    best = (0, 0, 0, int(np.argmin([bowl(job["config"], 1)["loss"] for job in first_rung()])))  # the best of rung 0
    search(log, failing(MemoryError(), 1, [], key=best))
    history = search(log, bowl)
    rungs = {}
    for r in history:
        rungs.setdefault((r["iteration"], r["bracket"], r["rung"]), {})[r["index"]] = r["loss"]
    for (iteration, number, rung), members in rungs.items():
        if rung > 0:
            below = rungs[iteration, number, rung - 1]
            assert sorted(members) == sorted(sorted(below, key=lambda i: (below[i], i))[:len(members)])
    assert best[3] in rungs[0, 0, 1]  # promoted now that it has a loss


def first_rung():
    optimiser = bohb.BOHB(SPACE, 1, 4, eta=2, seed=0)
    return [optimiser.ask(1) for _ in range(optimiser.plan[0][0][0])]


def test_a_transient_failure_that_fails_again_is_final(tmp_path):
    log, calls = tmp_path / "results.jsonl", []
    objective = failing(RuntimeError("CUDA out of memory"), 2, calls)
    search(log, objective)
    search(log, objective)
    twice = read_lines(log)
    assert [(r["attempt"], r["cause"]) for r in twice if bohb.job_key(r) == ONLY_RUNG] == [(1, "transient"),
                                                                                          (2, "transient")]
    calls.clear()
    optimiser = bohb.BOHB(SPACE, 1, 4, eta=2, seed=0)
    assert optimiser.complete(twice, 1)
    search(log, objective)
    assert calls == [] and read_lines(log) == twice  # not a third time


def test_a_deterministic_failure_is_not_run_again(tmp_path):
    log, calls = tmp_path / "results.jsonl", []
    objective = failing(ValueError("an invalid configuration"), 1, calls)
    search(log, objective)
    first = read_lines(log)
    assert [r["cause"] for r in first if bohb.job_key(r) == ONLY_RUNG] == ["deterministic"]
    assert not bohb.BOHB(SPACE, 1, 4, eta=2, seed=0).complete(first[:-1], 1)
    assert bohb.BOHB(SPACE, 1, 4, eta=2, seed=0).complete(first, 1)
    calls.clear()
    search(log, objective)
    assert calls == [] and read_lines(log) == first


def test_a_failed_future_is_logged_with_its_cause(tmp_path):
    """The executor's own failure (the worker running it died) is classified like the objective's."""
    from machinery.executor import WorkerDied

    class Dying(cf.ThreadPoolExecutor):
        def submit(self, fn, objective, job):
            if bohb.job_key(job) != ONLY_RUNG:
                return super().submit(fn, objective, job)
            future = cf.Future()
            future.set_exception(WorkerDied("the worker process on cpu died (exit code -9)"))
            return future

    log = tmp_path / "results.jsonl"
    with Dying(2) as executor:
        bohb.BOHB(SPACE, 1, 4, eta=2, seed=0).run(bowl, executor, 1, log_path=str(log))
    record = next(r for r in read_lines(log) if bohb.job_key(r) == ONLY_RUNG)
    assert (record["cause"], record["attempt"], record["started"]) == ("transient", 1, None)
    assert "WorkerDied" in record["error"]


def test_incumbent_is_the_best_at_the_largest_budget_earliest_on_ties():
    optimiser = bohb.BOHB({"a": (float, 0.0, 1.0)}, 1, 3, eta=3, seed=0)
    optimiser.history = [{"budget": 1.0, "loss": 0.0, "n": 0}, {"budget": 3.0, "loss": 0.5, "n": 1},
                         {"budget": 3.0, "loss": 0.5, "n": 2}, {"budget": 3.0, "loss": math.inf, "n": 3}]
    assert optimiser.incumbent()["n"] == 1


SCRIPT = """
import concurrent.futures as cf, sys, time
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
import bohb, test_bohb
def objective(config, budget, job):
    time.sleep(float(sys.argv[3]))
    return test_bohb.bowl(config, budget)
optimiser = bohb.BOHB(test_bohb.SPACE, 1, 9, eta=3, seed=0)
with cf.ThreadPoolExecutor(int(sys.argv[2])) as executor:
    optimiser.run(objective, executor, 3, log_path=sys.argv[1])
"""


def read_lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 3])
def test_a_killed_run_resumes_without_repeating_or_losing_work(tmp_path, workers):
    script = tmp_path / "search.py"
    script.write_text(SCRIPT.format(repo=str(REPO), tests=str(Path(__file__).parent)))
    straight, killed = tmp_path / "straight.jsonl", tmp_path / "killed.jsonl"
    subprocess.run([sys.executable, script, straight, str(workers), "0"], check=True)

    process = subprocess.Popen([sys.executable, script, killed, str(workers), "0.03"])
    deadline = time.time() + 30
    while (not killed.exists() or len(killed.read_text().splitlines()) < 25) and time.time() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = read_lines(killed)
    assert 25 <= len(before) < 66
    subprocess.run([sys.executable, script, killed, str(workers), "0"], check=True)
    after = read_lines(killed)

    keys = [bohb.job_key(r) for r in after]
    assert after[:len(before)] == before  # nothing finished was lost
    assert len(set(keys)) == len(keys) == 66  # nor run twice, and the search is complete
    if workers == 1:  # one worker: the resumed search is the uninterrupted one
        assert [(bohb.job_key(r), r["config"], r["loss"]) for r in after] == \
               [(bohb.job_key(r), r["config"], r["loss"]) for r in read_lines(straight)]


def test_a_line_torn_by_a_kill_is_dropped_and_rerun(tmp_path):
    log = tmp_path / "results.jsonl"
    with cf.ThreadPoolExecutor(1) as executor:
        bohb.BOHB(SPACE, 1, 9, eta=3, seed=0).run(bowl, executor, 1, log_path=str(log))
    whole = log.read_text().splitlines()
    log.write_text("\n".join(whole[:10]) + "\n" + whole[10][:30])
    with cf.ThreadPoolExecutor(1) as executor:
        bohb.BOHB(SPACE, 1, 9, eta=3, seed=0).run(bowl, executor, 1, log_path=str(log))
    after = log.read_text().splitlines()
    assert after[:10] == whole[:10]
    assert [(bohb.job_key(r), r["config"]) for r in map(json.loads, after)] == \
           [(bohb.job_key(r), r["config"]) for r in map(json.loads, whole)]


def test_a_log_from_other_budgets_is_refused(tmp_path):
    log = tmp_path / "results.jsonl"
    with cf.ThreadPoolExecutor(1) as executor:
        bohb.BOHB(SPACE, 1, 9, eta=3, seed=0).run(bowl, executor, 1, log_path=str(log))
        with pytest.raises(ValueError, match="other budgets"):
            bohb.BOHB(SPACE, 2, 18, eta=3, seed=0).run(bowl, executor, 1, log_path=str(log))


@pytest.mark.parametrize("damage, fragment", [
    (lambda r: {}, "field iteration is missing"),
    (lambda r: {**r, "loss": "abc"}, 'field loss must be a number or null, not "abc"'),
    (lambda r: {**r, "config": {**r["config"], "x1": None}}, "field config.x1 must be a number, not null"),
    (lambda r: {**r, "loss": None, "error": None}, "field error must say why the evaluation failed"),
])
def test_a_resumed_run_refuses_a_damaged_middle_line_in_one_line_and_runs_it_again_once_removed(tmp_path, damage,
                                                                                                fragment):
    """Branin on threads, as the demo runs it: a log line damaged in the middle stops the resumed run
    before anything is appended, naming the line and the field; removing the line, as the error
    says, runs that evaluation again and nothing else."""
    log = tmp_path / "results.jsonl"
    with cf.ThreadPoolExecutor(2) as executor:
        bohb.BOHB(bohb.BRANIN_SPACE, 1, 9, eta=3, seed=0).run(bohb.branin, executor, 1, log_path=str(log))
    lines = log.read_text().splitlines()
    lines[4] = json.dumps(damage(json.loads(lines[4])))
    log.write_text("\n".join(lines) + "\n")
    damaged = log.read_bytes()
    with cf.ThreadPoolExecutor(2) as executor, pytest.raises(ValueError) as caught:
        bohb.BOHB(bohb.BRANIN_SPACE, 1, 9, eta=3, seed=0).run(bohb.branin, executor, 1, log_path=str(log))
    message = str(caught.value)
    assert message.startswith(f"{log} line 5 is not a BOHB log record: ") and fragment in message
    assert message.endswith("repair or remove line 5 (a removed evaluation is run again).") and "\n" not in message
    assert log.read_bytes() == damaged
    log.write_text("\n".join(lines[:4] + lines[5:]) + "\n")
    with cf.ThreadPoolExecutor(2) as executor:
        bohb.BOHB(bohb.BRANIN_SPACE, 1, 9, eta=3, seed=0).run(bohb.branin, executor, 1, log_path=str(log))
    after = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(after) == len(lines) and len({bohb.job_key(r) for r in after}) == len(after)


# ------------------------------------------------------------------------------------------------
# Plans in epochs: whole budgets, trained as given; and plans of a size that can run

@pytest.mark.parametrize("min_budget, max_budget, eta", [(30, 120, 2), (1, 4, 2), (1, 81, 3), (5, 5, 2), (2, 2048, 2)])
def test_a_plan_of_whole_epochs_trains_every_budget_as_given(min_budget, max_budget, eta):
    plan = bohb.check_whole_budgets(min_budget, max_budget, eta)
    budgets = sorted({b for bracket in plan for _, b in bracket})
    assert budgets == [min_budget * eta**i for i in range(len(plan))] and budgets[-1] == max_budget
    assert all(b == int(b) for b in budgets)


@pytest.mark.parametrize("min_budget, max_budget, eta, rungs, suggested", [
    (1, 3, 2, "1.5, 3", ["--max-budget 2", "--max-budget 4"]),      # the lowest rung would round to 2 epochs
    (30, 100, 2, "50, 100", ["--max-budget 60", "--max-budget 120", "--min-budget 50", "--min-budget 25"]),  # 30 never
    (0.2, 4, 2, "0.25, 0.5, 1, 2, 4", ["--min-budget 1", "--min-budget 1 --max-budget 8"]),
    (1.5, 3, 2, "1.5, 3", ["--min-budget 2 --max-budget 2", "--min-budget 2 --max-budget 4"]),
    (10, 100, 3, "11.1111, 33.3333, 100", ["--max-budget 90", "--max-budget 270"]),
])
def test_budgets_that_would_be_rounded_or_never_trained_are_refused_with_valid_ones(min_budget, max_budget, eta,
                                                                                  rungs, suggested):
    with pytest.raises(ValueError) as caught:
        bohb.check_whole_budgets(min_budget, max_budget, eta)
    message = str(caught.value)
    assert f"--min-budget {min_budget:g}, --max-budget {max_budget:g} and --eta {eta} make rungs of {rungs} " \
           "epochs" in message and message.endswith("give " + " or ".join(suggested) + ".")
    for flags in suggested:  # every suggestion is itself a valid plan
        given = {"--min-budget": min_budget, "--max-budget": max_budget}
        given.update((flag, float(value)) for flag, value in zip(flags.split()[::2], flags.split()[1::2]))
        bohb.check_whole_budgets(given["--min-budget"], given["--max-budget"], eta)
    assert bohb.bracket_plan(min_budget, max_budget, eta)  # the library itself takes any budgets


@pytest.mark.parametrize("min_budget, max_budget, eta", [(1, 1e12, 2), (30, 1e12, 2), (1e-300, 1e300, 2),
                                                         (1, 10**7, 10**6), (1, 3**8, 3)])
def test_a_plan_too_large_to_run_is_refused_naming_the_largest_max_budget(min_budget, max_budget, eta):
    """More than MAX_EVALUATIONS trainings per iteration (1e12 would start from 2^39 configurations) is
    refused before anything is allocated, and the largest --max-budget it names is accepted."""
    with pytest.raises(ValueError, match=f"more than {bohb.MAX_EVALUATIONS:,} trainings per Hyperband iteration; "
                                         f"give --max-budget at most") as caught:
        bohb.bracket_plan(min_budget, max_budget, eta)
    largest = float(str(caught.value).split("at most ")[1].split(" ")[0])
    plan = bohb.bracket_plan(min_budget, largest, eta)
    assert sum(n for bracket in plan for n, _ in bracket) <= bohb.MAX_EVALUATIONS
    with pytest.raises(ValueError, match="more than"):  # and it is the largest
        bohb.bracket_plan(min_budget, largest * eta, eta)


@pytest.mark.slow
def test_readme_commands_plan_and_demo():
    """The README's `python bohb.py --plan ...` prints Alg. 1's table; `--demo` runs to its comparison."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bohb.py")
    plan = subprocess.run([sys.executable, script, "--plan", "--min-budget", "30", "--max-budget", "120",
                           "--eta", "2"], capture_output=True, text=True, check=True).stdout
    assert "4 @ 30 -> 2 @ 60 -> 1 @ 120" in plan and "3 @ 60 -> 1 @ 120" in plan and "3 @ 120" in plan
    demo = subprocess.run([sys.executable, script, "--demo", "--iterations", "2"], capture_output=True, text=True,
                          timeout=300)
    assert demo.returncode == 0, demo.stderr
    assert "random search" in demo.stdout and "incumbent" in demo.stdout
