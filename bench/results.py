"""bench/RESULTS.md: the one file that holds measured figures. Each bench script owns one section,
between `<!-- begin NAME -->` and `<!-- end NAME -->`, and rewrites it with the date, the machine and
the versions beside its figures; docs/cost.md quotes this file, docstrings give the commands."""
import datetime
import io
import os
import platform
import re
import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine(device="cpu"):
    """One line: date, device, CPU cores, torch and Python versions."""
    device = torch.device(device)
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        where = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return (f"{datetime.date.today().isoformat()}, {where}, torch {torch.__version__}, "
            f"Python {sys.version.split()[0]}")


def record(name, title, command, text, path=RESULTS):
    """Replace section `name` of the results file (added at the end if new)."""
    path = Path(path)
    body = f"<!-- begin {name} -->\n## {title}\n\n`{command}`\n\n{text.strip()}\n<!-- end {name} -->"
    old = path.read_text() if path.is_file() else "# Measured figures\n\nWritten by the bench scripts; docs/cost.md quotes them.\n"
    pattern = re.compile(rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->", re.S)
    new = pattern.sub(lambda _: body, old) if pattern.search(old) else old.rstrip() + "\n\n" + body + "\n"
    path.write_text(new)
    return path


@contextmanager
def recorded(name, title, command, device="cpu", enabled=True):
    """Print as usual; with `enabled` (a script's --record), also write what was printed into the
    script's section of RESULTS.md, under the machine line."""
    printed = io.StringIO()

    class Tee(io.TextIOBase):
        def write(self, text):
            sys.__stdout__.write(text)
            return printed.write(text)

        def flush(self):
            sys.__stdout__.flush()

    with redirect_stdout(Tee()):
        yield
    if enabled:
        path = record(name, title, command, f"{machine(device)}\n\n```\n{printed.getvalue().rstrip()}\n```")
        print(f"recorded in {path}")
