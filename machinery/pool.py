"""Where the students train: one worker process per device, each training several students at once.

    pool = make(slots(gpus=8, workers=0, workers_per_gpu=4), ray=None, init=Worker.load, initargs=(settings,))
    future = pool.submit(with_worker(fn), *args)   # queued until a slot is free; runs fn(worker, *args)

A concurrent.futures.Executor (bohb.py needs no more); `--ray ADDRESS` makes the same workers Ray
actors (ray_pool.py). Each worker runs `init` once and hands what it returned to its tasks. Several
students per GPU are threads of its one process on their own CUDA streams (separate processes would
time-slice without NVIDIA MPS); on the CPU each worker is one student. A failing student fails its own
task; a dead worker fails what it was running and is replaced; a worker whose parent dies exits.
"""
import concurrent.futures as cf
import multiprocessing
import os
import pickle
import signal
import threading

import torch

from machinery import cli, lifeline, ray_pool
from machinery.executor import Executor, RemoteError, WorkerDied, perform, with_type


def slots(gpus, workers, workers_per_gpu=1, ray=None):
    """[(device, students at once)]: one worker per GPU for --gpus N (None: every GPU of this machine,
    or of the Ray cluster at `ray`), else --workers CPU workers of one student each."""
    if ray is not None:
        return ray_pool.slots(ray, gpus, workers, workers_per_gpu)
    available = torch.cuda.device_count()
    gpus = available if gpus is None else gpus
    if gpus > 0:
        if gpus > available:
            raise cli.UserError(f"--gpus {gpus} asks for more GPUs than the {available} this machine has; "
                                   f"use --gpus {available}" + (" or --gpus 0 for the CPU" if available else ""))
        return [(f"cuda:{i}", workers_per_gpu) for i in range(gpus)]
    return [("cpu", 1)] * workers


def make(slots, ray, init=None, initargs=()):
    """The workers of `slots`, each running init(device, *initargs) once: processes of this machine, or
    Ray actors on the cluster at `ray`."""
    if ray:
        return ray_pool.RayPool(slots, init, initargs)
    return Pool(slots, init, initargs)


class Lazy(cf.Executor):
    """An executor that starts its workers (start(), which returns a pool) on the first task, so that
    a run with nothing left to do starts none. As a context manager it stops them at once on the way
    out, cancelling what is queued: Ctrl-C must not wait for a running training."""

    def __init__(self, start, size):
        self.start, self.size, self.pool = start, size, None

    @property
    def started(self):
        return self.pool is not None

    def submit(self, fn, /, *args, **kwargs):
        if self.pool is None:
            self.pool = self.start()
        return self.pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait=True, *, cancel_futures=False):
        if self.pool is not None:
            self.pool.shutdown(wait, cancel_futures=cancel_futures)

    def __exit__(self, *exc):
        self.shutdown(wait=False, cancel_futures=True)
        return False


def add_flags(p):
    """--gpus, --workers-per-gpu, --workers and --ray, shared by search.py and retrain.py."""
    p.add_argument("--gpus", type=cli.nonnegative_int, default=None,
                   help="GPUs to use, one worker each (default: every GPU of this machine, or of the Ray cluster "
                        "with --ray); 0 trains on the CPU")
    p.add_argument("--workers-per-gpu", type=cli.whole(1, 64), default=WORKERS_PER_GPU,
                   help="students trained at once on each GPU, each on its own CUDA stream")
    p.add_argument("--workers", type=cli.whole(1, 1024), default=min(4, os.cpu_count() or 1),
                   help="CPU workers when --gpus 0 (or on a Ray cluster without GPUs), one student each; on "
                        "this machine they share its cores")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the workers as Ray actors on the cluster at ADDRESS: HOST:PORT of `ray start --head`, "
                        "auto (the one this machine belongs to) or local (a new one on this machine); needs "
                        "pip install \"ray[default]\"")


WORKERS_PER_GPU = 4  # students per GPU; bench/gpu_check.py's levers section measures 1 / 4 / 8


class Pool(Executor):
    """A concurrent.futures.Executor over worker processes of this machine, `n` students at once on
    each device of `slots` [(device, n)]. init(device, *initargs) runs once in each new process."""

    def __init__(self, slots, init=None, initargs=()):
        super().__init__(slots)
        self.init, self.initargs = init, initargs
        cpu = sum(n for device, n in slots if device == "cpu")
        # torch threads per CPU student: OMP_NUM_THREADS where the user set it, else the cores shared out
        self.threads = (omp_threads() or max(1, (os.cpu_count() or 1) // cpu)) if cpu else 0
        self.context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked workers
        self.pipes = {}  # process -> its pipe
        self.spawner, self.leash = lifeline.Spawner(), lifeline.Leash()
        for worker in self.workers:  # all now: their starts (seconds each) overlap the teacher's check
            self.start(worker)

    def start(self, worker):
        parent, child = self.context.Pipe()
        process = self.context.Process(target=serve, args=(child, worker.device, worker.slots, self.threads,
                                                           self.init, self.initargs, os.getpid()))
        self.spawner.start(process)
        self.leash.hold(process.pid)
        child.close()
        worker.handle, self.pipes[process] = process, parent
        threading.Thread(target=self.listen, args=(worker, process, parent), daemon=True).start()

    def send(self, worker, task, fn, args, kwargs):
        self.pipes[worker.handle].send((task, fn, args, kwargs))

    def listen(self, worker, process, conn):
        """Pass a worker's answers to their futures; when its pipe closes, fail what it was running."""
        while True:
            try:
                task, ok, payload = conn.recv()
            except (EOFError, OSError, pickle.UnpicklingError):
                break
            self.answered(worker, task, ok, payload)
        process.join(timeout=10)
        if process.exitcode is not None:
            self.leash.release(process.pid)
        self.lost(worker, process, WorkerDied(f"the worker process on {worker.device} died (exit code "
                                              f"{process.exitcode}); its evaluations in flight failed"))
        self.pipes.pop(process, None)

    def shutdown(self, wait=True, *, cancel_futures=False):
        """wait=True: let the running tasks finish; wait=False: stop the workers now (Ctrl-C)."""
        live = [process for process, _ in self.close(cancel_futures)]
        for process in live:
            try:
                self.pipes[process].send(None) if wait else process.kill()
            except (OSError, KeyError):  # KeyError: it died meanwhile
                pass
        for process in live:
            process.join()
            self.leash.release(process.pid)
        self.spawner.close()
        self.leash.close()


def omp_threads():
    """OMP_NUM_THREADS's outer level ("4", or "4,2" for nested pools) as a positive int, else None."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


# ----------------------------------------------------------------------------------------------------
# The worker process

def serve(conn, device, n_slots, threads, init, initargs, parent_pid):
    """A worker's main loop: run each task received in one of `n_slots` threads, send its answer.
    It ends with its parent, process `parent_pid`, in every state (lifeline.py)."""
    lifeline.die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if threads:
        torch.set_num_threads(threads)
    send_lock = threading.Lock()

    def run(task, fn, args, kwargs):
        message = pickle.dumps((task, *perform(device, fn, args, kwargs, worker, startup_error)))
        with send_lock:
            conn.send_bytes(message)

    worker, startup_error = None, None
    try:
        if init is not None:
            worker = init(device, *initargs)
    except Exception as error:  # noqa: BLE001
        startup_error = RemoteError(f"the worker on {device} could not start: {with_type(error)}")
    with cf.ThreadPoolExecutor(n_slots) as students:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                os._exit(1)  # the parent is gone: stop at once, running students included
            if message is None:
                break  # an orderly shutdown: finish the running students, then exit
            students.submit(run, *message)


