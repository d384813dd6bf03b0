"""Benchmark of bohb.py: median regret of BOHB, plain Hyperband, random search and the reference
implementation (hpbandster) at equal total budget, and the cost of one proposal with 300 observations.

    python bench/bohb_regret.py --record        # 10 seeds, 2 functions, 21 iterations: minutes
    pip install hpbandster                      # the reference column only; never a dependency

--record writes the printed figures into bench/RESULTS.md.

The test functions are Branin (2-D) and Hartmann-6 with the budget-dependent bias of Kandasamy et al.
(ICML 2017): the fidelity z = budget / max_budget shifts the function's coefficients, so low budgets
rank configs well but not exactly, and z = 1 is the true function. Budgets are the paper's (30 -> 120,
eta = 2). Every method spends the same total budget, n_iterations Hyperband iterations of our plan:
random search evaluates at the full budget, hpbandster runs enough brackets and is cut at that budget.
Regret is the true value of the incumbent (the best config at the largest budget evaluated) minus the
function's minimum.
"""
import argparse
import concurrent.futures as cf
import functools
import logging
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bohb  # noqa: E402
from results import recorded  # noqa: E402

HARTMANN_SPACE = {f"x{j}": (float, 0.0, 1.0) for j in range(6)}
HARTMANN_MIN = -3.32237
HARTMANN_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                       [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
HARTMANN_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                              [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
HARTMANN_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(config, budget, job=None, max_budget=120.0):
    """Hartmann-6 with Kandasamy et al.'s bias: alpha' = alpha - 0.1 (1 - z)."""
    z = min(budget / max_budget, 1.0)
    x = np.array([config[f"x{j}"] for j in range(6)])  # (6,)
    inner = (HARTMANN_A * (x - HARTMANN_P) ** 2).sum(axis=1)  # (4,)
    return {"loss": float(-((HARTMANN_ALPHA - 0.1 * (1 - z)) * np.exp(-inner)).sum())}


FUNCTIONS = {"branin": (bohb.branin, bohb.BRANIN_SPACE, bohb.BRANIN_MIN),
             "hartmann6": (hartmann6, HARTMANN_SPACE, HARTMANN_MIN)}


def regret(evaluations, total_budget, function, minimum, max_budget):
    """Regret of the incumbent among the evaluations (in finishing order) that fit in total_budget."""
    spent, within = 0.0, []
    for evaluation in evaluations:
        spent += evaluation["budget"]
        if spent > total_budget * (1 + 1e-9):
            break
        within.append(evaluation)
    top = max(e["budget"] for e in within)
    best = min((e for e in within if e["budget"] == top), key=lambda e: e["loss"])
    return function(best["config"], max_budget, None, max_budget)["loss"] - minimum


def run_ours(objective, space, args, seed, random_fraction):
    optimiser = bohb.BOHB(space, args.min_budget, args.max_budget, args.eta, seed, random_fraction=random_fraction)
    with cf.ThreadPoolExecutor(1) as executor:
        return optimiser.run(objective, executor, args.iterations)


def run_hpbandster(objective, space, args, seed, total_budget):
    """The reference implementation, one worker thread, cut at total_budget."""
    import ConfigSpace
    import Pyro4
    from hpbandster.core.nameserver import NameServer
    from hpbandster.core.worker import Worker
    from hpbandster.optimizers import BOHB as ReferenceBOHB
    # hpbandster's default serializer writes numpy 2 scalars as "np.float64(30.0)", which its workers
    # cannot read back, and the job then hangs: pickle carries them intact (all in this one process)
    Pyro4.config.SERIALIZER = "pickle"
    Pyro4.config.SERIALIZERS_ACCEPTED.add("pickle")

    class ObjectiveWorker(Worker):
        def compute(self, config, budget, **kwargs):
            return {"loss": objective(config, budget, None)["loss"], "info": {}}

    configspace = ConfigSpace.ConfigurationSpace(seed=seed)
    configspace.add([ConfigSpace.UniformFloatHyperparameter(name, low, high) for name, (_, low, high) in space.items()])
    np.random.seed(seed)  # hpbandster draws from numpy's global generator
    run_id = f"bench{seed}"
    nameserver = NameServer(run_id=run_id, host="127.0.0.1", port=0)
    host, port = nameserver.start()
    ObjectiveWorker(nameserver=host, nameserver_port=port, run_id=run_id).run(background=True)
    optimiser = ReferenceBOHB(configspace=configspace, run_id=run_id, nameserver=host, nameserver_port=port,
                              min_budget=args.min_budget, max_budget=args.max_budget, eta=args.eta)
    brackets = len(bohb.bracket_plan(args.min_budget, args.max_budget, args.eta))
    result = optimiser.run(n_iterations=(args.iterations + 2) * brackets)  # its brackets are cheaper
    optimiser.shutdown(shutdown_workers=True)
    nameserver.shutdown()
    configs = result.get_id2config_mapping()
    runs = sorted(result.get_all_runs(), key=lambda r: r.time_stamps["finished"])
    assert sum(r.budget for r in runs) >= total_budget, "hpbandster ran out of brackets before the budget"
    return [{"config": configs[r.config_id]["config"], "budget": r.budget, "loss": r.loss} for r in runs]


def proposal_overhead(n_observations=300, repeats=100):
    """Median seconds of one model-based proposal with n_observations at one budget, in a 10-D space
    shaped like AutoKD's (six integer and four float dimensions)."""
    space = {**{f"n{i}": (int, 2, 10) for i in range(6)}, **{f"p{i}": (float, 0.1, 1.0) for i in range(4)}}
    optimiser = bohb.BOHB(space, 30, 120, 2, seed=0, random_fraction=0.0)
    rng = np.random.default_rng(0)
    for x in rng.random((n_observations, len(space))):
        optimiser.observe(optimiser.space.decode(x), 120.0, float(np.sum((x - 0.3) ** 2)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        optimiser.propose()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per method and function")
    parser.add_argument("--iterations", type=int, default=21, help="Hyperband iterations of our plan (paper: ~21)")
    parser.add_argument("--min-budget", type=float, default=30, help="smallest budget (paper: 30)")
    parser.add_argument("--max-budget", type=float, default=120, help="largest budget (paper: 120)")
    parser.add_argument("--eta", type=int, default=2, help="successive-halving rate (paper: 2)")
    parser.add_argument("--record", action="store_true", help="write the figures into bench/RESULTS.md")
    args = parser.parse_args()
    with recorded("bohb_regret", "BOHB against random search, Hyperband and hpbandster (bench/bohb_regret.py)",
                  "python bench/bohb_regret.py --record", enabled=args.record):
        measure(args)


def measure(args):
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # hpbandster's ConfigSpace calls
    warnings.filterwarnings("ignore", category=FutureWarning)  # and its statsmodels and pandas ones
    logging.getLogger("hpbandster").setLevel(logging.ERROR)
    try:
        import hpbandster  # noqa: F401
        reference = True
    except ImportError:
        reference = False
        print("hpbandster is not installed: the reference column is skipped (pip install hpbandster).")

    plan = bohb.bracket_plan(args.min_budget, args.max_budget, args.eta)
    total_budget = args.iterations * bohb.plan_budget(plan)
    print(f"budgets {args.min_budget:g} -> {args.max_budget:g}, eta {args.eta}, {args.iterations} iterations, "
          f"total budget {total_budget:g} ({total_budget / args.max_budget:g} full evaluations), {args.seeds} seeds")
    for name, (function, space, minimum) in FUNCTIONS.items():
        objective = functools.partial(function, max_budget=args.max_budget)
        methods = {"BOHB (bohb.py)": lambda seed: run_ours(objective, space, args, seed, 1 / 3),
                   "Hyperband (bohb.py)": lambda seed: run_ours(objective, space, args, seed, 1.0),
                   "random search": lambda seed: bohb.random_search(space, objective, total_budget,
                                                                    args.max_budget, seed)}
        if reference:
            methods["BOHB (hpbandster)"] = lambda seed: run_hpbandster(objective, space, args, seed, total_budget)
        medians = {}
        print(f"\n{name}: median regret [25 %, 75 %] over {args.seeds} seeds, wall seconds per run")
        for method, run in methods.items():
            regrets, start = [], time.time()
            for seed in range(args.seeds):
                regrets.append(regret(run(seed), total_budget, function, minimum, args.max_budget))
            medians[method] = np.median(regrets)
            low, high = np.percentile(regrets, [25, 75])
            print(f"    {method:20s} {medians[method]:.2e} [{low:.2e}, {high:.2e}]  "
                  f"{(time.time() - start) / args.seeds:.2f} s")
        ours = medians["BOHB (bohb.py)"]
        print(f"    BOHB / random search = {ours / medians['random search']:.3f} (target <= 0.5)", end="")
        if reference:
            print(f", BOHB / hpbandster = {ours / medians['BOHB (hpbandster)']:.3f} (target <= 1)", end="")
        print()
    print(f"\nproposal overhead with 300 observations (10-D): {proposal_overhead() * 1e3:.2f} ms (target < 20 ms)")


if __name__ == "__main__":
    main()
