"""Cases that need a Ray cluster; test_ray.py runs this file with pytest inside a private network
namespace (loopback only), never directly. The cluster is started by docs/many-machines.md's own
commands: a head and a second Ray node on 127.0.0.1, two CPUs each (the machine's cores, counted by
each node)."""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bohb  # noqa: E402
import train  # noqa: E402
from machinery import ray_pool  # noqa: E402
from helpers import documented_block, worker_settings  # noqa: E402
from test_pipeline import kill_after_first_result, read_log  # noqa: E402

ADDRESS = "127.0.0.1:6379"
# one budget of 1 epoch, --no-kd, no study: each Hyperband iteration is a single training (as in test_pipeline)
ONE = ["--dataset", "digits", "--min-budget", "1", "--max-budget", "1", "--max-params", "120000", "--gpus", "0",
       "--no-kd", "--study", "0"]


@pytest.fixture(scope="session", autouse=True)
def cluster():
    """docs/many-machines.md's cluster commands up to search.py (a token, RAY_AUTH_MODE=token, `ray start
    --head` and `ray start --address=HEAD:6379`), HEAD = 127.0.0.1; this process and the searches it
    runs are the drivers. Every Ray process ends with the namespace."""
    for line in documented_block("many-machines.md", "ray-cluster").splitlines():
        command = line.split("#")[0].strip().replace("HEAD", "127.0.0.1")
        if not command:
            continue
        if command.startswith("python"):
            break
        if command.startswith("export "):
            name, value = command[len("export "):].split("=", 1)
            os.environ[name] = value
        else:
            done = subprocess.run(command, shell=True, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-2000:]
    global ray
    import ray  # only now: Ray reads RAY_AUTH_MODE when it is imported
    ray_pool.connect(ADDRESS)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    return ADDRESS


def cli(script, *args):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


def keys(records):
    return [bohb.job_key(r) for r in records]


def test_a_killed_actor_fails_its_evaluation_only_and_is_replaced(tmp_path):
    """ray.kill on an actor mid-evaluation: that job is logged once, as a failure; the search runs its
    whole plan on the other actor and the new one; no job key twice."""
    def objective(config, budget, job):
        time.sleep(1.5 * budget)  # long enough to be killed in the middle
        return {"loss": config["x1"] ** 2 + config["x2"] ** 2}

    pool = ray_pool.RayPool([("cpu", 1), ("cpu", 1)])
    victim = pool.workers[0]
    first_actor = victim.handle

    def kill_mid_evaluation():
        while not victim.running:
            time.sleep(0.05)
        time.sleep(0.3)
        ray.kill(first_actor)

    killer = threading.Thread(target=kill_mid_evaluation)
    killer.start()
    log = tmp_path / "results.jsonl"
    try:
        search = bohb.BOHB({"x1": (float, -1.0, 1.0), "x2": (float, -1.0, 1.0)}, 1, 2, 2, seed=0)
        search.run(objective, pool, 1, log, n_workers=pool.size)
    finally:
        killer.join()
        pool.shutdown()
    records = read_log(tmp_path)
    assert len(records) == len(set(keys(records))) == 5  # 2 @ 1 -> 1 @ 2, then 2 @ 2
    failed = [r for r in records if r["loss"] is None]
    assert len(failed) == 1 and "WorkerDied" in failed[0]["error"] and "died" in failed[0]["error"]
    assert failed[0]["cause"] == "transient"  # a resumed search runs it once more (bohb.retry)
    assert victim.handle is not None and victim.handle is not first_actor  # the slot has a new actor


def test_a_node_without_the_data_is_named_in_one_line(tmp_path):
    settings = worker_settings(data_dir=str(tmp_path / "no-data"), no_kd=True)
    with pytest.raises(ray_pool.NodeError) as error:
        ray_pool.RayPool([("cpu", 1)], train.Worker.load, (settings,))
    message = str(error.value)
    assert message.startswith("node 127.0.0.1 (") and str(tmp_path / "no-data") in message
    assert "every node needs" in message and "\n" not in message


def test_a_node_without_the_code_is_named_in_one_line(tmp_path):
    """A driver whose workers cannot import this code (it runs from elsewhere, and only its own sys.path
    has the repository), as on a node without the checkout: one line naming the node and the cause."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from machinery import ray_pool; ray_pool.connect({ADDRESS!r})\n"
            "try:\n    ray_pool.RayPool([('cpu', 1)])\nexcept ray_pool.NodeError as e:\n    print(e)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.stdout.startswith("the Ray actor on node 127.0.0.1 died while starting"), r.stdout + r.stderr[-2000:]
    assert "No module named 'machinery'" in r.stdout and "every node needs this code" in r.stdout
    assert len(r.stdout.strip().splitlines()) == 1


def test_an_actor_that_cannot_be_replaced_stops_the_pool_with_one_line(tmp_path):
    """The first actor starts; its replacement (after ray.kill) finds no data on its node: the pool then
    refuses new work with the node's one line (bohb.run logs what is in flight and stops)."""
    started = tmp_path / "started"

    def init(device):
        if started.exists():
            raise FileNotFoundError(f"{tmp_path / 'data'} not found; point --data-dir at the folder")
        started.touch()

    pool = ray_pool.RayPool([("cpu", 1)], init)
    try:
        assert pool.submit(abs, -1).result() == 1
        ray.kill(pool.workers[0].handle)
        deadline = time.time() + 120
        while pool.refusal is None and time.time() < deadline:
            time.sleep(0.1)
        with pytest.raises(ray_pool.NodeError, match=r"^node 127\.0\.0\.1 .* not found; point --data-dir"):
            pool.submit(abs, -2)
    finally:
        pool.shutdown()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A search driven through the cluster, its driver killed (kill -9) after the first result, then
    the same command run again: (log before, log after, second run)."""
    out = tmp_path_factory.mktemp("resume") / "search"
    args = [sys.executable, str(ROOT / "search.py"), *ONE, "--iterations", "2", "--workers", "1", "--ray", ADDRESS,
            "--out", str(out)]
    before = kill_after_first_result(args, out)  # the driver alone: its actors live under Ray's processes
    free = time.time() + 60  # Ray ends a dead driver's actors: their CPUs come back
    while time.time() < free and ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
        time.sleep(0.5)
    freed = ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]
    again = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    return out, before, read_log(out), again, freed


def test_a_killed_driver_is_resumed_by_the_same_command(resumed):
    out, before, after, again, freed = resumed
    assert len(before) == 1, "the search should have been killed part-way"
    assert freed, "the dead driver's actor kept its CPU"
    assert again.returncode == 0, again.stderr[-3000:]
    assert after[:1] == before and len(after) == len(set(keys(after))) == 2
    assert "1 evaluations already done" in again.stdout


def test_retrain_on_the_cluster(resumed, tmp_path):
    out = resumed[0]
    r = cli("retrain.py", "--theta", out / "best.json", "--k", "2", "--epochs", "1", "--workers", "2", "--ray",
            ADDRESS, "--out", tmp_path / "retrain")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((tmp_path / "retrain" / "summary.json").read_text())
    assert summary["k"] == 2 and sorted(s["seed"] for s in summary["students"]) == [0, 1]
