"""Under pytest-xdist (README: `pytest -n 2`) two tests run at once on a 2-core machine: each test
process, and every process it starts, then uses one torch thread. Two tests each running OpenMP's
2 spinning threads on the same 2 cores slowed each other down 10 to 60 times (a run with
--dist worksteal here: 3 s tests took 160-190 s)."""
import os

import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the scripts and worker processes tests start
    torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts processes, servers or whole runs; "
                                       "`pytest -m 'not slow'` is the fast loop")
