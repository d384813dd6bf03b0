"""The workers of pool.py as Ray actors, so that one search or retraining spreads over many machines.

    ray start --head --port=6379                      # on one node (docs/many-machines.md: the token, SLURM)
    ray start --address=HEAD:6379                     # on each of the others
    python search.py --dataset cifar10 --teacher teacher.pt --ray HEAD:6379

RayPool is pool.Pool's executor over one actor per slot, placed by Ray's GPU scheduling: one actor per
GPU running --workers-per-gpu students as threads on their own CUDA streams, exactly like a local worker
process. Interpretation: fractional num_gpus (N processes per GPU) would time-slice without NVIDIA MPS.
BOHB, the log and best.json stay with the driver, so logging and resume are those of one machine.
Interpretation (files on the nodes): every node reads the data, the teacher and this code at the
driver's paths (a shared filesystem); a node without them fails before the first evaluation, named.
Faults: a dead actor fails its evaluations in flight and a new actor takes the slot; Ray retries nothing.
"""
import concurrent.futures as cf
import logging
import queue
import re
import socket
import sys
import threading

import torch

from machinery import cli
from machinery import executor

FILES_HINT = ("every node needs this code, the data set and the teacher at the paths the driver uses "
              "(a shared filesystem, or the same copies on every node)")
WAIT_S = 60  # say after this long that actors wait for Ray to place them (busy or missing GPUs)


class NodeError(cli.UserError, RuntimeError):
    """An actor could not start on its node: one line for the user (a UserError) and, to bohb.run, a
    pool that refuses work (a RuntimeError), so that it logs the evaluations in flight and stops."""


# ----------------------------------------------------------------------------------------------------
# The cluster

def connect(address):
    """Join the Ray cluster at `address` once per process; returns its resources {"GPU": n, "CPU": n, ...}."""
    try:
        import ray
    except ImportError:
        raise cli.UserError('--ray needs Ray, an optional dependency: pip install "ray[default]"') from None
    if not ray.is_initialized():
        host, _, port = address.rpartition(":")
        if host and port.isdigit():  # fail in seconds: Ray itself retries an absent head for minutes
            try:
                socket.create_connection((host, int(port)), timeout=10).close()
            except OSError as e:
                raise cli.UserError(f"no Ray cluster answers at {address} ({e.strerror or e}): start one "
                                       f"there with `ray start --head --port={port}`, or correct --ray.") from None
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            full = cli.describe(e.__cause__ or e)
            cause = full.split(". ")[0]
            hint = (" The cluster uses token authentication: give this process its token (RAY_AUTH_MODE=token, "
                    "and ~/.ray/auth_token or RAY_AUTH_TOKEN as on the nodes)." if "authtoken" in full.lower().replace(
                        " ", "").replace("_", "") else "")
            raise cli.UserError(f"cannot join the Ray cluster at {address}: {cause}.{hint}") from None
    return ray.cluster_resources()


def slots(address, gpus, workers_, workers_per_gpu):
    """pool.slots on the cluster at `address`: [("cuda", students at once)] per GPU (--gpus N, by
    default every GPU the cluster has now), else [("cpu", 1)] per CPU worker. Asking for more than the
    cluster has now is allowed: nodes may still be joining (a batch job's), and the actors wait for them."""
    resources = connect(address)
    have_gpus, have_cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    gpus = have_gpus if gpus is None else gpus
    need, have, what = (gpus, have_gpus, "GPUs") if gpus else (workers_, have_cpus, "CPUs")
    if need > have:
        print(f"the Ray cluster at {address} has {have} {what} now; {need - have} of the {need} actors will wait "
              f"for nodes to join", file=sys.stderr, flush=True)
    return [("cuda", workers_per_gpu)] * gpus if gpus else [("cpu", 1)] * workers_


def last_error(error):
    """One line of a Ray error, which goes on with the actor's whole story: the last exception it names
    (e.g. "ModuleNotFoundError: No module named 'workers'" on a node without the code), else its first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line)]
    if not lines:
        return type(error).__name__
    return f"{type(error).__name__}: {(named[-1] if named else lines[0])[:200]}"


# ----------------------------------------------------------------------------------------------------
# One actor: a worker process of pool.py, on whichever node Ray places it

class Actor:
    """init(device, *initargs) once, then evaluations, up to max_concurrency at once, each in a thread
    of its own on its own CUDA stream (executor.perform)."""

    def __init__(self, device, init, initargs):
        import ray
        self.node = f"{ray.util.get_node_ip_address()} ({socket.gethostname()})"
        self.device = "cuda:0" if device == "cuda" else device  # Ray shows an actor its own GPU only
        torch.set_num_threads(1)  # the one CPU the actor holds; a GPU student needs no more
        self.error, self.worker = None, None
        try:
            if init is not None:
                self.worker = init(self.device, *initargs)
        except Exception as error:  # noqa: BLE001 (reported by ready(), before any task is sent)
            self.error = f"node {self.node} could not start its worker: {cli.describe(error)}"

    def ready(self):
        return self.node, self.error

    def alive(self):
        """Never answers: its failure is how the driver learns that this actor died, busy or idle."""
        threading.Event().wait()

    def run(self, fn, args, kwargs):
        return executor.perform(self.device, fn, args, kwargs, self.worker)


# ----------------------------------------------------------------------------------------------------
# The pool (driver side)

class RayPool(executor.Executor):
    """pool.Pool's interface over Ray actors, one per slot [(device, n)] of `slots`; waits until
    every actor has run init(device, *initargs), or raises a NodeError naming the node that could not."""

    def __init__(self, slots, init=None, initargs=()):
        import ray
        super().__init__(slots)
        self.ray, self.actor = ray, ray.remote(Actor)
        self.init, self.initargs = init, initargs
        self.events = queue.SimpleQueue()  # (worker, actor, kind, task, Ray's future), handled by one thread
        self.changed = threading.Condition(self.lock)
        self.refusal = None  # the NodeError that stops the pool
        for worker in self.workers:
            worker.ready, worker.node, worker.retired = False, None, False
        threading.Thread(target=self.watch, daemon=True).start()
        with self.lock:
            for worker in self.workers:
                self.start(worker)
            if not self.changed.wait_for(self.started, timeout=WAIT_S):
                print(f"waiting for Ray to place {len(self.workers)} actors ({self.describe_need()}) ...",
                      file=sys.stderr, flush=True)
                self.changed.wait_for(self.started)
        if self.refusal is not None:
            self.shutdown(wait=False)
            raise self.refusal

    def started(self):
        return self.refusal is not None or all(w.ready for w in self.workers)

    def describe_need(self):
        gpus = sum(w.device == "cuda" for w in self.workers)
        resources = self.ray.cluster_resources()
        return (f"{gpus} GPUs; the cluster has {int(resources.get('GPU', 0))}" if gpus else
                f"{len(self.workers)} CPUs; the cluster has {int(resources.get('CPU', 0))}")

    def submit(self, fn, /, *args, **kwargs):
        if self.refusal is not None:
            raise self.refusal
        return super().submit(fn, *args, **kwargs)

    def takes(self, worker):
        return worker.ready

    def start(self, worker):
        """A new actor for `worker` (lock held); it takes tasks once ready() has answered."""
        cuda = worker.device == "cuda"
        actor = self.actor.options(num_cpus=1, num_gpus=1 if cuda else 0, max_concurrency=worker.slots + 1,
                                   max_restarts=0, max_task_retries=0).remote(worker.device, self.init, self.initargs)
        worker.handle, worker.ready = actor, False
        self.watch_ref(actor.ready.remote(), worker, actor, "ready", None)
        self.watch_ref(actor.alive.remote(), worker, actor, "alive", None)  # the extra thread: a death watch

    def send(self, worker, task, fn, args, kwargs):
        self.watch_ref(worker.handle.run.remote(fn, args, kwargs), worker, worker.handle, "run", task)

    def watch_ref(self, ref, worker, actor, kind, task):
        ref.future().add_done_callback(lambda done: self.events.put((worker, actor, kind, task, done)))

    def watch(self):
        """Hand each finished Ray call to its handler, one at a time, outside Ray's own threads."""
        for worker, actor, kind, task, done in iter(self.events.get, None):
            try:
                value = done.result()
            except Exception as error:  # noqa: BLE001 (the actor died, or its node was lost)
                self.died(worker, actor, error)
                continue
            if kind == "ready":
                self.opened(worker, actor, *value)
            elif kind == "run":
                self.answered(worker, task, *value)

    def opened(self, worker, actor, node, error):
        """The actor of `worker` has started, or has failed to: then it is not replaced, the pool refuses
        new work, and what is queued waits for the other actors (or fails if none is left)."""
        failed = []
        with self.lock:
            if worker.handle is not actor:
                return
            if error is None:
                worker.ready, worker.node = True, node
                failed = self.dispatch() if not self.closed else []
            else:
                worker.retired = True
                self.refusal = self.refusal or NodeError(f"{error}; {FILES_HINT}.")
                if all(w.retired for w in self.workers):
                    failed = [(future, self.refusal) for future, *_ in self.pending
                              if future.set_running_or_notify_cancel()]
                    self.pending.clear()
            self.changed.notify_all()
        if error is not None:
            self.kill(actor)
        executor.settle(failed)

    def died(self, worker, actor, error):
        """An actor died: its evaluations in flight fail, and a new actor takes the slot; or it died
        while starting, which counts as a failure to start."""
        self.kill(actor)
        with self.lock:
            current, ready = worker.handle is actor and not worker.retired, worker.ready
            if current:
                worker.ready = False  # no task goes to the slot until its new actor is ready
        if not current:
            return
        if not ready:
            node = re.search(r"\bip=([0-9a-fA-F.:]+)", str(error))  # Ray's message names the node's address
            where = f"on node {node.group(1)}" if node else f"for {worker.device}"
            return self.opened(worker, actor, None, f"the Ray actor {where} died while starting ({last_error(error)})")
        lost = executor.WorkerDied(f"the Ray actor on {worker.node} died ({last_error(error)}); its evaluations "
                                  "in flight failed")
        if self.lost(worker, actor, lost):
            with self.lock:
                if not self.closed and worker.handle is None:
                    self.start(worker)

    def kill(self, actor):
        """End an actor for good (Ray would not restart it anyway: max_restarts=0)."""
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 (already gone)
            pass

    def shutdown(self, wait=True, *, cancel_futures=False):
        """wait=True: let the running evaluations finish; then (or at once) end the actors."""
        live = self.close(cancel_futures)
        actors, running = [actor for actor, _ in live], [future for _, futures in live for future in futures]
        if wait:
            cf.wait(running)
        for actor in actors:
            self.kill(actor)
        cf.wait(running, timeout=30)  # their futures fail as Ray reports the actors dead
        self.events.put(None)
