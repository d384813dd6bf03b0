"""The executor both pools share: a queue of tasks, several students at once on each worker, and what
runs a task in a worker (its own CUDA stream, the worker's state handed to it, its outcome sent back).

A task is fn(*args, **kwargs). A task that needs what its worker holds (the data set, the teacher,
loaded once per worker by the pool's `init`) is wrapped: `with_worker(fn)` is called as
fn(worker, *args, **kwargs), where `worker` is what init returned in the process running it.
"""
import collections
import concurrent.futures as cf
import contextvars
import pickle
import threading
from contextlib import nullcontext

import torch

from machinery import cli


class WorkerDied(RuntimeError):
    """The worker process running an evaluation died (killed, or a crash that took it down)."""


class RemoteError(RuntimeError):
    """An exception raised in a worker that could not be sent back as it was."""


# ----------------------------------------------------------------------------------------------------
# The queue (parent side)

class _Worker:
    def __init__(self, device, slots):
        self.device, self.slots = device, slots
        self.handle, self.running = None, {}  # handle: its process (or Ray actor); running: task id -> Future


class Executor(cf.Executor):
    """What the local Pool and ray_pool.RayPool share: a queue of tasks, `n` students at once on
    each worker of `slots` [(device, n)], a worker that died started again when a task needs its slot.
    Subclasses start(worker) and send(worker, task, fn, args, kwargs), and report back through
    answered() and lost()."""

    def __init__(self, slots):
        self.workers = [_Worker(device, n) for device, n in slots]
        self.lock = threading.Lock()
        self.pending = collections.deque()
        self.next_task, self.closed = 0, False

    @property
    def size(self):
        """Evaluations that run at once."""
        return sum(w.slots for w in self.workers)

    def submit(self, fn, /, *args, **kwargs):
        future = cf.Future()
        with self.lock:
            if self.closed:
                raise RuntimeError("the pool is shut down")
            self.pending.append((future, fn, args, kwargs))
            failed = self.dispatch()
        settle(failed)
        return future

    def takes(self, worker):
        """Whether `worker` may be sent tasks now (the lock is held)."""
        return True

    def dispatch(self):
        """Send queued tasks to free slots (lock held); returns the futures that failed to send."""
        failed = []
        while self.pending:
            worker = next((w for w in self.workers if self.takes(w) and len(w.running) < w.slots), None)
            if worker is None:
                break
            future, fn, args, kwargs = self.pending.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            if worker.handle is None:
                self.start(worker)
            task, self.next_task = self.next_task, self.next_task + 1
            try:
                self.send(worker, task, fn, args, kwargs)
                worker.running[task] = future
            except Exception as error:  # noqa: BLE001 (an unpicklable task, a closed pipe)
                failed.append((future, RemoteError(f"could not send the task to {worker.device}: {error}")))
        return failed

    def answered(self, worker, task, ok, payload):
        """A task's answer: its result (ok) or the exception it raised."""
        with self.lock:
            future = worker.running.pop(task, None)
            failed = self.dispatch() if not self.closed else []
        settle(failed + ([(future, payload if not ok else None, payload)] if future else []))

    def lost(self, worker, handle, error):
        """The worker process (or actor) `handle` died: fail what it was running with `error`; the
        next task that needs the slot starts a new one. True if `handle` was still the worker's."""
        with self.lock:
            current = worker.handle is handle
            lost = worker.running if current else {}
            if current:
                worker.handle, worker.running = None, {}
            failed = self.dispatch() if not self.closed else []
        settle(failed + [(future, error) for future in lost.values()])
        return current

    def close(self, cancel_futures):
        """Take no more tasks (cancel the queued ones with cancel_futures); returns the live workers'
        handles and the futures they are running."""
        with self.lock:
            self.closed = True
            cancelled = list(self.pending) if cancel_futures else []
            if cancel_futures:
                self.pending.clear()
            live = [(w.handle, list(w.running.values())) for w in self.workers if w.handle is not None]
        for future, *_ in cancelled:
            future.cancel()
        return live


def settle(outcomes):
    """Set futures outside the pool's lock: a done-callback may submit again. Each outcome is
    (future, exception) or (future, None, result)."""
    for future, error, *result in outcomes:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result[0])


# ----------------------------------------------------------------------------------------------------
# A task in a worker

_WORKER = contextvars.ContextVar("worker")  # what the pool's init returned, set while a task runs


class with_worker:  # noqa: N801 (used like a function: with_worker(fn))
    """fn(worker, *args, **kwargs) as a task: `worker` is what the pool's init returned in the process
    that runs it (a picklable wrapper, so that it travels to the workers like fn itself)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(_WORKER.get(), *args, **kwargs)


_THREAD = threading.local()


def perform(device, fn, args, kwargs, worker=None, startup_error=None):
    """(ok, result or exception) of fn(*args, **kwargs), run on this thread's own CUDA stream of
    `device` so that the students of one GPU overlap; an exception that cannot travel back to the
    parent (it does not pickle, or cannot be rebuilt) is replaced by a RemoteError that describes it."""
    token = _WORKER.set(worker)
    try:
        if startup_error is not None:
            raise startup_error
        with stream(device):
            outcome = (True, fn(*args, **kwargs))
    except BaseException as error:  # noqa: BLE001 (every failure goes back to its future)
        outcome = (False, error)
    finally:
        _WORKER.reset(token)
    try:
        pickle.loads(pickle.dumps(outcome))  # some exceptions pickle but cannot be rebuilt
    except Exception:  # noqa: BLE001 (an unpicklable result or exception)
        outcome = (False, RemoteError(with_type(outcome[1])))
    return outcome


def stream(device):
    """This thread's own CUDA stream on `device` (nothing on the CPU)."""
    if not device.startswith("cuda"):
        return nullcontext()
    if not hasattr(_THREAD, "stream"):
        index = torch.device(device).index or 0
        torch.cuda.set_device(index)
        _THREAD.stream = torch.cuda.Stream(index)
    return torch.cuda.stream(_THREAD.stream)


def with_type(error):
    """'ValueError: the message', for an error reported away from where it was raised."""
    return f"{type(error).__name__}: {cli.describe(error)}" if isinstance(error, BaseException) else repr(error)
