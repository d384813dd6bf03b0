"""machinery/lifeline.py: a worker process dies with its parent, killed with -9, whatever state the
worker is in (starting, busy), by the kernel's signal and by the watchdog used where there is none; and
the kernel's signal follows the thread that started a process, which is why one thread starts them."""
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from machinery import lifeline

ROOT = Path(__file__).resolve().parent.parent
PARENT = '''
import os, subprocess, sys, threading, time
sys.path.insert(0, {root!r})
from machinery import pool as workers
from machinery import lifeline


def mark(path, pid=None):
    """Say this process's pid (or `pid`) in `path`, written whole: the test polls it."""
    with open(path + ".tmp", "w") as f:
        f.write(str(pid or os.getpid()))
    os.replace(path + ".tmp", path)


if __name__ == "__mp_main__" and sys.argv[1] == "importing":
    time.sleep(60)  # a spawned worker importing this script, its parent's main: a slow import


def sleep_in_init(device, path):
    mark(path)
    time.sleep(60)


def sleep_in_task(path):
    mark(path)
    time.sleep(60)


if __name__ == "__main__":
    state, path = sys.argv[1:3]
    if state == "importing":
        pool = workers.Pool([("cpu", 1)])
        mark(path, pool.workers[0].handle.pid)
    elif state == "starting":
        pool = workers.Pool([("cpu", 1)], sleep_in_init, (path,))
    elif state == "busy":
        pool = workers.Pool([("cpu", 1)])
        pool.submit(sleep_in_task, path)
    elif state == "watchdog":  # a child watched by the thread alone, as where the kernel has no signal
        subprocess.Popen([sys.executable, __file__, "watched", path, str(os.getpid())])
    else:
        threading.Thread(target=lifeline.watch, args=(int(sys.argv[3]),), daemon=True).start()
        mark(path)
    time.sleep(120)
'''


def alive(pid):
    """Whether process `pid` exists and is not a zombie (an orphan whose new parent has not reaped it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("state", ["importing", "starting", "busy", "watchdog"])
def test_a_worker_dies_with_its_killed_parent(tmp_path, state):
    """kill -9 of the parent while its worker imports the parent's script (before any of the
    worker's code runs: the leash), sleeps in init (starting), in a task (busy), or, for the
    watchdog alone, anywhere: the worker is gone within 3 s."""
    script, marker = tmp_path / "parent.py", tmp_path / "worker.pid"
    script.write_text(PARENT.format(root=str(ROOT)))
    parent = subprocess.Popen([sys.executable, str(script), state, str(marker)], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not marker.exists() and parent.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), f"the worker did not reach its {state} state"
        pid = int(marker.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 3
        while time.time() < deadline and alive(pid):
            time.sleep(0.05)
        assert not alive(pid), f"the {state} worker {pid} outlived its parent by 3 s"
    finally:
        parent.kill()
        parent.wait()
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)


def arm_and_wait(parent_pid, path):
    """A child that dies with its parent, says so in `path`, then waits to be killed."""
    lifeline.die_with_parent(parent_pid)
    Path(path).write_text("armed")
    time.sleep(60)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
@pytest.mark.parametrize("spawner", [True, False])
def test_the_kernel_signal_follows_the_starting_thread_so_one_thread_starts_them_all(tmp_path, spawner):
    """A child started from a thread that ends after the child armed its signal: started by that
    thread itself, the kernel kills it (its "parent" ended); started through a Spawner, it lives."""
    context = multiprocessing.get_context("spawn")
    marker, starter = tmp_path / "armed", lifeline.Spawner()
    child = context.Process(target=arm_and_wait, args=(os.getpid(), str(marker)))

    def start_and_wait_until_armed():
        if spawner:
            starter.start(child)
        else:
            child.start()
        deadline = time.time() + 120
        while time.time() < deadline and not marker.exists():
            time.sleep(0.05)

    thread = threading.Thread(target=start_and_wait_until_armed)
    thread.start()
    thread.join()
    try:
        assert marker.exists(), "the child did not start"
        child.join(timeout=2)  # the thread has ended: the kernel's signal, if any, is on its way
        assert child.is_alive() == spawner
    finally:
        child.kill()
        child.join()
        starter.close()


@pytest.mark.slow
def test_a_leash_kills_what_it_holds_and_not_what_it_released():
    leash = lifeline.Leash()
    held, released = (subprocess.Popen(["sleep", "60"]) for _ in range(2))
    try:
        leash.hold(held.pid)
        leash.hold(released.pid)
        leash.release(released.pid)
        leash.close()
        assert held.wait(timeout=10) == -signal.SIGKILL
        assert released.poll() is None
    finally:
        for p in (held, released):
            p.kill()
            p.wait()
