"""Where the students train: one worker process per device, each training several students at once.

    pool = Pool(slots(gpus=8, workers=0, workers_per_gpu=4), init_worker, (settings,))
    future = pool.submit(fn, *args)   # a concurrent.futures.Executor: queued until a slot is free

On many machines the same workers run as Ray actors (`--ray ADDRESS`, ray_workers.py), with the same
interface; `pool(settings)` makes either.

Each worker process loads the data set and the teacher once, on its device, into `STATE` (the
initialiser `init_worker`); search.py and retrain.py submit functions that read it. bohb.py drives the
pool through the Executor interface alone.

Several students per GPU (`--workers-per-gpu N`) are N threads of that GPU's one process, each on its
own CUDA stream. Kernels of separate processes on one GPU do not run at the same time unless NVIDIA
MPS runs (without it the GPU time-slices between their contexts); kernels on separate streams of one
process do, and the students share one copy of the data set, of the teacher and of its lessons. The
training step is one CUDA graph replay (train.KDStep), so the threads barely contend for Python.
`python bench/gpu_check.py` measures both ways (bench/RESULTS.md). The students of one process draw
their dropout from the device's one random stream, so with N > 1 a student's dropout masks depend on
its neighbours; its architecture, initial weights, data order and augmentation stay seeded by its
evaluation alone. On the CPU each worker is a process of its own with one student, and the cores are
split between them.

Faults: a student that fails, CUDA out of memory included, fails its own evaluation only. A worker
process that dies fails the evaluations it was running and is replaced for the next ones. A worker
whose parent dies, by kill -9 too, exits within a second, starting or busy (machinery/lifeline.py).
"""
import collections
import concurrent.futures as cf
import fcntl
import hashlib
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import torch

import common
from machinery import lifeline

STATE = {}  # in a worker process: device, data, teacher, settings (init_worker), lessons


class WorkerDied(RuntimeError):
    """The worker process running an evaluation died (killed, or a crash that took it down)."""


class RemoteError(RuntimeError):
    """An exception raised in a worker that could not be sent back as it was."""


# ----------------------------------------------------------------------------------------------------
# The pool (parent side)

def slots(gpus, workers, workers_per_gpu=1, ray=None):
    """[(device, students at once)]: one worker per GPU for --gpus N (None: every GPU of this machine,
    or of the Ray cluster at `ray`), else --workers CPU workers of one student each."""
    if ray is not None:
        import ray_workers
        return ray_workers.slots(ray, gpus, workers, workers_per_gpu)
    available = torch.cuda.device_count()
    gpus = available if gpus is None else gpus
    if gpus > 0:
        if gpus > available:
            raise common.UserError(f"--gpus {gpus} asks for more GPUs than the {available} this machine has; "
                                   f"use --gpus {available}" + (" or --gpus 0 for the CPU" if available else ""))
        return [(f"cuda:{i}", workers_per_gpu) for i in range(gpus)]
    return [("cpu", 1)] * workers


def pool(settings):
    """The workers of settings["slots"], each running init_worker once: processes of this machine, or
    Ray actors on the cluster at settings["ray"]."""
    if settings.get("ray"):
        import ray_workers
        return ray_workers.RayPool(settings["slots"], init_worker, (settings,))
    return Pool(settings["slots"], init_worker, (settings,))


def add_flags(p):
    """--gpus, --workers-per-gpu, --workers and --ray, shared by search.py and retrain.py."""
    p.add_argument("--gpus", type=common.nonnegative_int, default=None,
                   help="GPUs to use, one worker each (default: every GPU of this machine, or of the Ray cluster "
                        "with --ray); 0 trains on the CPU")
    p.add_argument("--workers-per-gpu", type=common.positive_int, default=WORKERS_PER_GPU,
                   help="students trained at once on each GPU, each on its own CUDA stream")
    p.add_argument("--workers", type=common.positive_int, default=min(4, os.cpu_count() or 1),
                   help="CPU workers when --gpus 0 (or on a Ray cluster without GPUs), one student each; on "
                        "this machine they share its cores")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the workers as Ray actors on the cluster at ADDRESS: HOST:PORT of `ray start --head`, "
                        "auto (the one this machine belongs to) or local (a new one on this machine); needs "
                        "pip install \"ray[default]\"")


WORKERS_PER_GPU = 4  # set from bench/gpu_check.py's aggregate throughput (bench/RESULTS.md)


class _Worker:
    def __init__(self, device, slots):
        self.device, self.slots = device, slots
        self.handle, self.running = None, {}  # handle: its process (or Ray actor); running: task id -> Future


class Executor(cf.Executor):
    """What the local Pool and ray_workers.RayPool share: a queue of tasks, `n` students at once on
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


def settle(outcomes):
    """Set futures outside the pool's lock: a done-callback may submit again. Each outcome is
    (future, exception) or (future, None, result)."""
    for future, error, *result in outcomes:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result[0])


# ----------------------------------------------------------------------------------------------------
# The worker process

def serve(conn, device, n_slots, threads, init, initargs, parent_pid):
    """A worker's main loop: run each task received in one of `n_slots` threads, send its answer.
    It ends with its parent, process `parent_pid`, in every state (machinery/lifeline.py)."""
    lifeline.die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if threads:
        torch.set_num_threads(threads)
    send_lock = threading.Lock()

    def run(task, fn, args, kwargs):
        message = pickle.dumps((task, *perform(device, fn, args, kwargs, startup_error)))
        with send_lock:
            conn.send_bytes(message)

    startup_error = None
    try:
        if init is not None:
            init(device, *initargs)
    except Exception as error:  # noqa: BLE001
        startup_error = RemoteError(f"the worker on {device} could not start: {describe(error)}")
    with cf.ThreadPoolExecutor(n_slots) as students:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                os._exit(1)  # the parent is gone: stop at once, running students included
            if message is None:
                break  # an orderly shutdown: finish the running students, then exit
            students.submit(run, *message)


_THREAD = threading.local()


def perform(device, fn, args, kwargs, startup_error=None):
    """(ok, result or exception) of fn(*args, **kwargs), run on this thread's own CUDA stream of
    `device` so that the students of one GPU overlap; an exception that cannot travel back to the
    parent (it does not pickle, or cannot be rebuilt) is replaced by a RemoteError that describes it."""
    try:
        if startup_error is not None:
            raise startup_error
        with stream(device):
            outcome = (True, fn(*args, **kwargs))
    except BaseException as error:  # noqa: BLE001 (every failure goes back to its future)
        outcome = (False, error)
    try:
        pickle.loads(pickle.dumps(outcome))  # some exceptions pickle but cannot be rebuilt
    except Exception:  # noqa: BLE001 (an unpicklable result or exception)
        outcome = (False, RemoteError(describe(outcome[1])))
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


def describe(error):
    return "".join(traceback.format_exception_only(error)).strip() if isinstance(error, BaseException) else repr(error)


# ----------------------------------------------------------------------------------------------------
# Worker state: the data set, the teacher, its lessons

def init_worker(device, settings):
    """Load the data set (settings["split"]: "search" for search.py, "final" for retrain.py) and the
    teacher once per worker process."""
    from data import load_data
    import teachers
    data = load_data(settings["dataset"], settings["data_dir"], settings["split"], device=device,
                     val_size=settings.get("val_size"), cache_dir=settings.get("cache_dir"))
    teacher = None
    if settings.get("teacher") and not settings.get("no_kd"):
        teacher = teachers.load(settings["teacher"], settings["dataset"], data.num_classes, device)
    STATE.update(device=device, data=data, teacher=teacher, settings=settings, lessons=None,
                 lock=threading.Lock())


def shares_process():
    """True where several students share this process (their dropout then shares one RNG stream)."""
    return STATE["device"].startswith("cuda") and STATE["settings"].get("workers_per_gpu", 1) > 1


def teacher(protocol):
    """What a student of this worker distils from: the teacher's lessons looked up (computed once,
    see prepare), else the teacher itself; None for a run without KD."""
    if STATE["teacher"] is None:
        return None
    path = STATE["settings"].get("lessons")
    if path is None:
        return STATE["teacher"]
    with STATE["lock"]:
        if STATE["lessons"] is None:
            STATE["lessons"] = lessons_table(path, protocol)[0]
    return STATE["lessons"]


def lessons_file(path):
    """Where this worker keeps the lessons: `path`, in the driver's output folder, where this machine
    sees that folder (the driver's own, or a shared filesystem); else, on a Ray node without it, a file
    of the node's own in its temporary folder, named after `path`, so that its actors compute them once."""
    if Path(path).parent.is_dir():
        return path
    local = Path(tempfile.gettempdir()) / "autokd-lessons" / f"{hashlib.sha1(path.encode()).hexdigest()[:16]}.pt"
    local.parent.mkdir(parents=True, exist_ok=True)
    return str(local)


def lessons_table(path, protocol):
    """(Lessons, seconds spent computing them): loaded from `path` (see lessons_file) if they fit this
    run, else computed with this worker's teacher and saved there. A file lock keeps the workers of
    one machine from computing them twice."""
    import train
    from teachers import lessons
    path = lessons_file(path)
    data, device = STATE["data"], torch.device(STATE["device"])
    amp, autocast, memory_format = train.precision(protocol, device)
    key = {**STATE["settings"]["lessons_key"], "amp": amp, "train_size": len(data.train)}
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = lessons.load(path, key, device)
        if table is not None:
            return table, 0.0
        start = time.perf_counter()
        dtype = torch.bfloat16 if amp == "bf16" else torch.float32
        table = lessons.compute(STATE["teacher"], data, autocast, torch.channels_last, dtype, key)
        lessons.save(table, path)
        return table, time.perf_counter() - start


def prepare(protocol):
    """Run once before the first student: the teacher's accuracy on the split the students are
    scored on, its profile, and its lessons computed (or loaded) when the settings ask for them."""
    import generator
    import train
    data, device = STATE["data"], torch.device(STATE["device"])
    _, autocast, _ = train.precision(protocol, device)
    accuracy, _ = train.score(STATE["teacher"], data, data.eval, 4 * protocol.batch_size, autocast,
                              torch.channels_last)
    seconds = 0.0
    if STATE["settings"].get("lessons"):
        with STATE["lock"]:
            STATE["lessons"], seconds = lessons_table(STATE["settings"]["lessons"], protocol)
    return {"accuracy": accuracy, "split": "val" if data.split == "search" else "test", "images": len(data.eval),
            "num_classes": data.num_classes, "lessons_s": seconds,
            **generator.profile(STATE["teacher"], data.image_size, STATE["device"])}


NEAR_CHANCE = 1.5  # a teacher below 1.5 x chance accuracy is reported as useless


def check_teacher(pool, protocol, settings):
    """Before the first student of a search or a retraining: the teacher's accuracy on the split the
    students are scored on, printed, with a warning near chance; its lessons computed once where the
    augmentation's views are finite. Returns prepare's report (search.py and retrain.py keep it)."""
    if settings.get("lessons"):
        print(f"teacher lessons: its logits for every view of every training image, computed once -> "
              f"{settings['lessons']}", flush=True)
    else:
        print(f"teacher lessons: computed live at every step ({settings.get('lessons_live')})", flush=True)
    report = pool.submit(prepare, protocol).result()
    chance = 1 / report["num_classes"]
    where = "the hold-out" if report["split"] == "val" else "the test set"
    print(f"teacher: {100 * report['accuracy']:.2f} % on {where} ({report['images']:,} images; chance "
          f"{100 * chance:.0f} %)" + (f"; lessons computed in {report['lessons_s']:.0f} s" if report["lessons_s"] else ""),
          flush=True)
    if report["accuracy"] < NEAR_CHANCE * chance:
        print(f"warning: the teacher is near chance accuracy, so its lessons carry no knowledge: check the "
              f"teacher checkpoint {settings['teacher']}, or pass --no-kd.", file=sys.stderr, flush=True)
    return report
