"""machinery/pool.py: worker processes that fail or die cost their own tasks only, and tasks queue like
any Executor's. Every test starts processes."""
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train  # noqa: E402
from helpers import worker_settings  # noqa: E402
from machinery import pool as machinery_pool  # noqa: E402

pytestmark = pytest.mark.slow


def fail_in_worker(x):
    raise RuntimeError("CUDA out of memory (simulated)")


def die_in_worker(x):
    os._exit(3)  # a worker process killed from under the pool


def square(x):
    return x * x


def test_a_dead_worker_costs_one_evaluation_not_the_pool():
    pool = machinery_pool.Pool([("cpu", 1), ("cpu", 1)], train.Worker.load, (worker_settings(),))
    try:
        assert pool.submit(square, 3).result() == 9
        with pytest.raises(RuntimeError, match="simulated"):
            pool.submit(fail_in_worker, 0).result()
        dead = pool.submit(die_in_worker, 0)
        with pytest.raises(Exception):
            dead.result()
        results = [pool.submit(square, i) for i in (4, 5)]  # both slots work again, one is a new process
        assert [f.result() for f in results] == [16, 25]
    finally:
        pool.shutdown()


def slow_square(x):
    time.sleep(0.2)
    return x * x


def test_the_pool_queues_what_its_slots_cannot_take_yet():
    """Like any Executor: more tasks than slots wait their turn; a slot holds several students."""
    pool = machinery_pool.Pool([("cpu", 2)])
    try:
        futures = [pool.submit(slow_square, i) for i in range(7)]
        assert [f.result(timeout=60) for f in futures] == [i * i for i in range(7)]
    finally:
        pool.shutdown()
