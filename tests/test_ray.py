"""--ray: the workers as Ray actors (machinery/ray_pool.py), on the CPU, with every packet on 127.0.0.1.

Ray advertises the machine's external address even when told 127.0.0.1, so every test that starts
Ray runs inside a private network namespace that it makes here (`unshare -n`, then `ip link set lo up`:
inside it Ray finds only 127.0.0.1), with its own process namespace and /tmp/ray, so that nothing of it
outlives the test or meets another Ray on this machine. Where the namespace cannot be made (not root),
those tests are skipped and say why. The cases that need a cluster are in ray_cases.py, run by pytest
inside the namespace; the ones here need none."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import train  # noqa: E402
from helpers import documented_block, worker_settings  # noqa: E402

pytestmark = pytest.mark.slow  # Ray clusters in a private network namespace

HAVE_RAY = importlib.util.find_spec("ray") is not None  # not imported: Ray reads RAY_AUTH_MODE at import


def private_network_reason():
    """None where this process can make a private network namespace, else why not."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2) to keep Ray on a private loopback"
    probe = subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "sh", "-c", "ip link set lo up"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a private network namespace (root needed): {probe.stderr.strip()[:200]}"
    return None


REASON = None if HAVE_RAY else 'Ray is not installed: pip install "ray[default]"'
REASON = REASON or private_network_reason()
needs_cluster = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def private_network(command, tmp_path, timeout, **env):
    """Run `command` in a new network, process and mount namespace: loopback only, a private /tmp/ray,
    HOME in tmp_path (no Ray token of this machine's), `python` and `ray` on PATH as this interpreter."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    home.mkdir(exist_ok=True)
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / "ray").write_text(f'#!/bin/sh\nexec {sys.executable} -m ray.scripts.scripts "$@"\n')
    for name in ("python", "ray"):
        (bin_dir / name).chmod(0o755)
    setup = 'ip link set lo up && mkdir -p /tmp/ray && mount -t tmpfs tmpfs /tmp/ray && exec "$@"'
    env = {**os.environ, "HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}", **env}
    return subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "sh", "-c", setup, "sh", *map(str, command)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny DARTS teacher for digits, trained for one epoch (its accuracy does not matter here)."""
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    assert train.main(["--arch", "darts", "--dataset", "digits", "--split", "final", "--width", "4",
                       "--layers", "3", "--epochs", "1", "--no-auxiliary", "--save", str(path)]) == 0
    return path


@needs_cluster
def test_two_ray_actors_reach_the_local_pools_best_json(tmp_path, teacher):
    """bench/ray_overhead.py as docs/many-machines.md gives it (--ray local), on a smaller plan: the same
    KD search with 2 local workers and 2 Ray actors (one torch thread per student both ways, so that
    their sums agree) ends with the same best.json and the same loss for every job."""
    r = private_network([sys.executable, ROOT / "bench" / "ray_overhead.py", "--ray", "local", "--teacher", teacher,
                         "--out", tmp_path / "bench", "--min-budget", "1", "--max-budget", "1", "--iterations", "2"],
                        tmp_path, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "| same best.json and job losses | yes |" in r.stdout
    for name in ("local", "ray"):
        records = [json.loads(line) for line in (tmp_path / "bench" / name / "results.jsonl").read_text().splitlines()]
        assert [rec["error"] for rec in records] == [None, None]
    settings = json.loads((tmp_path / "bench" / "ray" / "best.json").read_text())["settings"]
    assert settings["ray"] == "local" and settings["lessons"]  # KD with the lessons, on the actors


@needs_cluster
def test_on_a_ray_cluster(tmp_path):
    """ray_cases.py on a two-node cluster started as docs/many-machines.md says: a killed actor, a node
    without the data or the code, a replacement that cannot start, a killed driver resumed, retrain.py."""
    r = private_network([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                         ROOT / "tests" / "ray_cases.py", "--basetemp", tmp_path / "cases"], tmp_path, timeout=540)
    tail = (r.stdout[-6000:] + "\n" + r.stderr[-3000:])
    assert r.returncode == 0, tail
    assert re.search(r"\b[1-9]\d* passed", r.stdout) and "skipped" not in r.stdout, tail


@needs_cluster
def test_the_documented_slurm_script_runs_a_search(tmp_path):
    """docs/many-machines.md's batch script, as written, with stand-ins for SLURM's commands that run
    everything on this machine: two 'nodes' (a Ray head and a Ray node on 127.0.0.1), then a search
    over them."""
    script = tmp_path / "search.sbatch"
    script.write_text(documented_block("many-machines.md", "slurm-script"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins = {  # srun drops its own --options and runs the command here; two nodes; one address
        "srun": 'while [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n',
        "scontrol": 'echo node0\necho node1\n',
        "hostname": '[ "$1" = --ip-address ] && echo 127.0.0.1 || echo node0\n'}
    for name, body in stand_ins.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    out = tmp_path / "search"
    r = private_network(["env", "SLURM_JOB_NODELIST=node[0-1]", "SLURM_JOB_NUM_NODES=2", "bash", script,
                         "--dataset", "digits", "--no-kd", "--min-budget", "1", "--max-budget", "1", "--iterations",
                         "2", "--max-params", "120000", "--study", "0", "--workers", "2", "--out", out], tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(rec["error"] is None for rec in records)
    assert json.loads((out / "best.json").read_text())["settings"]["ray"] == "127.0.0.1:6379"


def test_without_ray_the_flag_says_how_to_install_it(tmp_path):
    """Ray hidden from the interpreter: one line with the install command, and nothing written."""
    code = ("import runpy, sys; sys.modules['ray'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    out = tmp_path / "search"
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "search.py"), "--dataset", "digits", "--no-kd",
                        "--ray", "127.0.0.1:6379", "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and 'pip install "ray[default]"' in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.skipif(not HAVE_RAY, reason='Ray is not installed: pip install "ray[default]"')
def test_no_cluster_at_the_address_is_one_line_at_once(tmp_path):
    """Nothing listens on port 1 of the loopback: refused in seconds (Ray alone retries for minutes)."""
    out = tmp_path / "search"
    r = subprocess.run([sys.executable, str(ROOT / "search.py"), "--dataset", "digits", "--no-kd", "--ray",
                        "127.0.0.1:1", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1 and "no Ray cluster answers at 127.0.0.1:1" in r.stderr, r.stderr
    assert "ray start --head --port=1" in r.stderr and "Traceback" not in r.stderr and not out.exists()


def test_a_node_without_the_output_folder_computes_the_lessons_once_for_itself(tmp_path, teacher, monkeypatch):
    """The driver's lessons.pt path does not exist on this 'node': the lessons go to a file of the node's
    own, computed by the first worker and read by the next, and the driver's folder is not made."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "node-tmp"))
    (tmp_path / "node-tmp").mkdir()
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    driver = tmp_path / "driver-only" / "search" / "lessons.pt"
    settings = worker_settings(no_kd=False, teacher=str(teacher), lessons=str(driver),
                               lessons_key={"teacher": "t", "dataset": "digits", "split": "search", "val_size": None})
    worker = train.Worker.load("cpu", settings)
    protocol = train.Protocol(capture="off")
    first, computed_s = worker.lessons_table(protocol)
    again, loaded_s = worker.lessons_table(protocol)
    assert computed_s > 0 and loaded_s == 0.0
    assert again.logits.equal(first.logits)
    assert not driver.parent.exists()
    assert [p.parent for p in (tmp_path / "node-tmp").rglob("*.pt")] == [tmp_path / "node-tmp" / "autokd-lessons"]
