"""Worker processes that die with their parent in every state (DESIGN.md, "Where the workers run").

A worker reads its pipe to the parent only between tasks, so after a kill -9 of the parent the pipe
closing would not stop one still starting or busy training. Two things do:
- once the worker's code runs, the kernel kills it when its parent goes (prctl PR_SET_PDEATHSIG,
  Linux), or a thread polling the parent's pid does (elsewhere). The kernel counts the *thread* that
  started a process as its parent, so the pool starts them all from one long-lived thread (Spawner);
- before that (a spawned worker first imports its parent's script and torch: seconds, tens of seconds
  on a busy machine), a small stdlib-only process holds the workers' pids and kills them when the pipe
  from their parent closes (Leash).

    die_with_parent(parent_pid)   # first thing in the worker process
"""
import concurrent.futures as cf
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
POLL_S = 0.5          # the watchdog's period where the kernel's signal is not available


def die_with_parent(parent_pid):
    """Exit this process as soon as the process `parent_pid` that started it has died: at once if it
    already has, then by the kernel's SIGKILL on Linux, else by a watchdog thread."""
    if not (sys.platform.startswith("linux") and parent_death_signal(signal.SIGKILL)):
        threading.Thread(target=watch, args=(parent_pid,), daemon=True, name="lifeline").start()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed: nothing will send it
        os._exit(1)


def parent_death_signal(sig):
    """Ask the kernel to send `sig` to this process when its parent dies; False where it cannot."""
    try:
        prctl = ctypes.CDLL(None).prctl  # the C library the interpreter is linked with
        return prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no C library, or one without prctl
        return False


def watch(parent_pid):
    """Exit this process once its parent is no longer `parent_pid` (it died: the orphan was adopted)."""
    while os.getppid() == parent_pid:
        time.sleep(POLL_S)
    os._exit(1)


class Spawner:
    """Starts processes from one thread of its own that lives until close(): PR_SET_PDEATHSIG fires
    when the thread that started a process ends, which for a pool's listener threads is long before
    the process it restarts should."""

    def __init__(self):
        self.thread = cf.ThreadPoolExecutor(1, thread_name_prefix="spawner")

    def start(self, process):
        self.thread.submit(process.start).result()

    def close(self):
        self.thread.shutdown()


# The leash's program: it reads "+pid" (hold) and "-pid" (release, the process has exited) lines from
# its owner; at EOF, the owner having exited or died, it kills the processes it still holds.
LEASH = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
held = set()
for line in sys.stdin:
    pid = int(line)
    (held.add if pid > 0 else held.discard)(abs(pid))
for pid in held:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""


class Leash:
    """A small process (python -S: no site-packages, started in a fraction of a second) that kills
    the processes it holds when this process exits or dies, whatever they are doing."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-S", "-c", LEASH], stdin=subprocess.PIPE, text=True)
        self.lock = threading.Lock()  # held and released from the pool's threads

    def hold(self, pid):
        self.send(pid)

    def release(self, pid):
        """`pid` has exited (its number may be given to another process): forget it."""
        self.send(-pid)

    def send(self, signed_pid):
        with self.lock:
            try:
                self.process.stdin.write(f"{signed_pid:+d}\n")
                self.process.stdin.flush()
            except (OSError, ValueError):  # the leash was killed, or closed: die_with_parent still holds
                pass

    def close(self):
        """Let the leash go, killing what it still holds."""
        with self.lock:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        self.process.wait()
