"""Shared test set-up. Under pytest-xdist (`pytest -n 2`) two tests run at once on a 2-core machine:
each test process, and every process it starts, then uses one torch thread, so that two OpenMP pools
do not spin on the same cores. `-m "not slow"` leaves out the tests that start processes, servers or
whole runs (the `slow` marker)."""
import os

import pytest
import torch

import data as D

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the scripts and worker processes tests start
    torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts processes, servers or whole runs; "
                                       "`pytest -m 'not slow'` is the fast loop")


@pytest.fixture(scope="module")
def one_thread():
    """For tests of many tiny ops: one thread avoids waking a pool for each (on a busy 2-core machine
    each parallel region can wait a whole scheduler time slice)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    """The bundled digits, search split (1,097 training images, 300 held out)."""
    return D.load_data("digits")
