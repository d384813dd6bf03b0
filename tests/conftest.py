"""Shared test set-up. Under pytest-xdist (`pytest -n 2`) two tests run at once on a 2-core machine:
each test process, and every process it starts, then uses one torch thread, so that two OpenMP pools
do not spin on the same cores. `-m "not slow"` leaves out the tests that start processes, servers or
whole runs (the `slow` marker)."""
import os

import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the scripts and worker processes tests start
    torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts processes, servers or whole runs; "
                                       "`pytest -m 'not slow'` is the fast loop")
