"""Ray's overhead: one tiny digits search run twice, with 2 local worker processes and with 2 Ray actors.

    python bench/ray_overhead.py --ray local              # one machine: each Ray search starts its own Ray
    python bench/ray_overhead.py --ray HEAD:6379          # a running cluster (`ray start --head`)

Both runs are the same command (`search.py --dataset digits`, KD from a 1-epoch digits teacher trained
first, the same --seed, 2 CPU workers of one torch thread each) but for `--ray`; the wall time of each
is the whole command, from start to best.json: data, teacher check, lessons, the students, and with
--ray joining the cluster and starting the actors (and, with `--ray local`, starting Ray itself, timed
apart as well). Then it checks that both reached the same best.json: the same θ, τ, α, accuracy and
budget, and the same loss for every job of the plan. The plan defaults to test_pipeline's tiny one
(1 Hyperband iteration of budgets 1 -> 2 epochs: 5 students). --repeats N alternates the two N times
(a busy machine's figures vary by tens of percent from run to run). It prints the figures and, with
--record, writes them to bench/RESULTS.md with the load average, which says how busy the machine was.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from results import machine, record  # noqa: E402


def run(script, *args):
    """(seconds, completed process) of `python script args` in the repository."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"error: {script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done


def outcome(folder):
    """What two runs of one search must share: best.json's choice and every job's loss."""
    best = json.loads((folder / "best.json").read_text())
    jobs = {}
    for line in (folder / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        jobs[f"{r['iteration']}/{r['bracket']}/{r['rung']}/{r['index']}"] = (r["config"], r["budget"], r["loss"])
    return {"config": best["config"], "accuracy": best["accuracy"], "budget": best["budget"], "jobs": jobs}


def ray_start_s():
    """Seconds to start a local Ray instance and end it, in a fresh process."""
    code = ("import time, logging, ray; t = time.perf_counter(); ray.init(logging_level=logging.WARNING); "
            "ray.shutdown(); print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ray", default="local", help="Ray cluster address for the second run (default: local, a new "
                                                  "Ray instance on this machine started by that search)")
    p.add_argument("--teacher", default=None, help="a digits teacher checkpoint (default: one trained for 1 epoch "
                                                   "into --out)")
    p.add_argument("--out", default="runs/ray-overhead", help="folder for the teacher and both searches (emptied)")
    p.add_argument("--min-budget", default="1", help="smallest budget in epochs")
    p.add_argument("--max-budget", default="2", help="largest budget in epochs")
    p.add_argument("--iterations", default="1", help="Hyperband iterations")
    p.add_argument("--repeats", type=int, default=1, help="runs of each, alternated")
    p.add_argument("--record", action="store_true", help="write the figures into bench/RESULTS.md")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    load_before = os.getloadavg()
    teacher = Path(args.teacher) if args.teacher else out / "teacher.pt"
    if not teacher.is_file():
        run("train.py", "--arch", "darts", "--dataset", "digits", "--split", "final", "--width", "4", "--layers", "3",
            "--epochs", "1", "--no-auxiliary", "--save", teacher)
    search = ["--dataset", "digits", "--teacher", teacher, "--min-budget", args.min_budget, "--max-budget",
              args.max_budget, "--iterations", args.iterations, "--max-params", "120000", "--gpus", "0",
              "--workers", "2", "--seed", "0", "--study", "0"]
    times = {"local": [], "ray": []}
    for _ in range(args.repeats):
        for name, extra in (("local", []), ("ray", ["--ray", args.ray])):
            for f in (out / name).glob("*"):  # a fresh search each time, not a resumed one
                f.unlink()
            times[name].append(run("search.py", *search, *extra, "--out", out / name)[0])
    start_s = ray_start_s() if args.ray == "local" else None
    same = outcome(out / "local") == outcome(out / "ray")
    local_s, ray_s = statistics.median(times["local"]), statistics.median(times["ray"])
    each = lambda name: ", ".join(f"{t:.1f}" for t in times[name])  # noqa: E731
    plan = f"{len(outcome(out / 'local')['jobs'])} students, budgets {args.min_budget} -> {args.max_budget} epochs"
    rows = [("2 local worker processes", f"{local_s:.1f} s (runs: {each('local')})"),
            (f"2 Ray actors (--ray {args.ray})", f"{ray_s:.1f} s (runs: {each('ray')})"),
            ("difference (Ray's overhead)", f"{ray_s - local_s:+.1f} s"),
            ("of which starting a local Ray instance", f"{start_s:.1f} s" if start_s is not None else "not measured"),
            ("same best.json and job losses", "yes" if same else "NO")]
    load_after = os.getloadavg()
    table = "\n".join([f"| run | wall time, median of {args.repeats} |", "|---|---|"] +
                      [f"| {a} | {b} |" for a, b in rows])
    text = (f"{machine()}; tiny digits search ({plan}, KD); load average (1 min) {load_before[0]:.1f} before, "
            f"{load_after[0]:.1f} after (the machine has {os.cpu_count()} cores: a load above that means other jobs "
            f"shared them).\n\n{table}\n\nNot measured: a real multi-node run.")
    print(text)
    if args.record:
        record("ray_overhead", "Ray's overhead (bench/ray_overhead.py)",
               f"python bench/ray_overhead.py --ray {args.ray} --repeats {args.repeats} --record", text)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
