"""Command lines and user errors, shared by every stage: one parser per flag type (`--max-params 1e5`
means the same everywhere), the `cli` wrapper of every main(), and the checker of θ, τ and α.

Exit status: 0 done, 1 the command could not be done (the message says why and what to do),
2 the command line itself is wrong, 130 interrupted.
"""
import argparse
import datetime
import functools
import json
import math
import os
import sys

import torch


class UserError(ValueError):
    """A mistake the user can fix; the message is one sentence that says how."""


# ----------------------------------------------------------------------------------------------------
# Command lines

class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: 'error: argument --epochs: must be a positive integer, not 0'."""

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _number(text, kind):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    if kind is int:
        if value != int(value):
            raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}")
        return int(value)
    return value


def number_flag(kind, low, strict, what, high=None):
    """An argparse type: a number of `kind` at least `low` (above it if `strict`) and at most `high`
    (if given), else the error 'must be <what>'. Numbers are read as floats first, so '1e5' is 100000
    wherever a flag takes it."""
    def parse(text):
        value = _number(text, kind)
        if value < low or (strict and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
        return value
    return parse


def whole(low, high):
    """An argparse type: a whole number in [low, high]."""
    what = f"a positive whole number up to {high:,}" if low == 1 else f"a whole number from {low:,} to {high:,}"
    return number_flag(int, low, False, what, high)


positive_int = number_flag(int, 1, False, "a positive whole number")
nonnegative_int = number_flag(int, 0, False, "a whole number >= 0")
positive_float = number_flag(float, 0, True, "a number > 0")
nonnegative_float = number_flag(float, 0, False, "a number >= 0")
fraction = number_flag(float, 0, False, "a number in [0, 1]", 1)

# Ranges of the flags every stage shares. A seed is what numpy's legacy seeding and torch accept
# alike (32 bits); the longest training is 600 epochs (paper Sec. 4), so 10,000 is a typo's bound,
# not a constraint.
MAX_SEED = 2**32 - 1
MAX_EPOCHS = 10_000
MAX_IMAGES = 10_000_000  # more than any data set's training images (ImageNet's 1.28 M); the split's own
# size bounds a batch once the data is loaded (train.check_batch_size)
seed = number_flag(int, 0, False, f"a whole number from 0 to {MAX_SEED:,} (2**32 - 1)", MAX_SEED)
epochs = whole(1, MAX_EPOCHS)
images = whole(1, MAX_IMAGES)
budget = number_flag(float, 0, True, f"a number > 0 up to {MAX_EPOCHS:,} epochs", MAX_EPOCHS)
BYTES_PER_PARAM = 16  # float32 weights, gradients and momentum, and one copy (a checkpoint, an EMA)


def memory_bytes():
    """The largest memory a network of this machine can train in: the physical memory, or a GPU's
    (None where the system does not say)."""
    try:
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or no such name
        host = 0
    gpus = [torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())]
    return max([host, *gpus]) or None


def max_params(text):
    """--max-params: a positive whole number of parameters that fits this machine's memory at
    BYTES_PER_PARAM each (a limit beyond it could only build networks that cannot be trained here)."""
    memory = memory_bytes()
    if memory is None:
        return positive_int(text)
    high = memory // BYTES_PER_PARAM
    high -= high % 10 ** max(0, len(str(high)) - 3)  # three significant digits, rounded down
    return number_flag(int, 1, False, f"a positive whole number up to {high:,}, the parameters that fit this "
                                      f"machine's memory at {BYTES_PER_PARAM} bytes each", high)(text)


def probability_below_one(text):
    """A probability in [0, 1), such as a drop-path probability (1 would drop everything)."""
    value = nonnegative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), not {text}")
    return value


def device_name(text):
    """A torch device this machine has: 'cpu', 'cuda', 'cuda:1'."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device; use cpu or cuda") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text}: this machine has no CUDA GPU; use --device cpu")
        if (device.index or 0) >= count:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {count} GPU(s); use cuda:0 to "
                                             f"cuda:{count - 1}")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"{text}: use cpu or cuda")
    return str(device)


def cli(main):
    """Wrap a stage's main(argv): a UserError, ValueError or OSError becomes one line on stderr and
    exit status 1; Ctrl-C exits 130 without a traceback. main returns 0 or raises."""
    @functools.wraps(main)
    def wrapped(argv=None):
        try:
            return main(argv) or 0
        except (ValueError, OSError) as error:
            print(f"error: {describe(error)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted; run the same command again to resume", file=sys.stderr)
            return 130
    return wrapped


def clip(text, limit=60):
    """text cut to `limit` characters: an error quotes a value or a name, never a whole file."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def excerpt(value, limit=60):
    """A value as short JSON for an error message (an 11 MB θ file gives a line, not 11 MB)."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):  # keys that JSON cannot hold, a circular value
        text = repr(value)
    return clip(text, limit)


def describe(error):
    """One line for an exception: OSErrors name their file."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split())


# ----------------------------------------------------------------------------------------------------
# Values: θ, τ, α and the like

def check_value(name, value, kind, low, high, what="θ"):
    """value as `kind` within [low, high], or a UserError naming it. A boolean is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{what}[{name!r}] must be a number in [{low}, {high}], not {excerpt(value)}.")
    if kind is int and value != int(value):
        raise UserError(f"{what}[{name!r}] must be an integer in [{low}, {high}], not {excerpt(value)}.")
    if not low <= value <= high:
        raise UserError(f"{what}[{name!r}] = {value} is outside its range [{low}, {high}].")
    return kind(value)


def check_config(config, space, optional=(), what="θ"):
    """config checked against space {name: (kind, low, high)}: every key known, every non-optional
    key present, every value of its kind and in range. Returns it with ints as int, floats as float."""
    if not isinstance(config, dict):
        raise UserError(f"{what} must be a JSON object with the keys {', '.join(space)}, not "
                        f"{type(config).__name__}.")
    unknown = sorted(map(str, set(config) - set(space)))
    missing = [name for name in space if name not in config and name not in optional]
    if unknown or missing:
        parts = ([f"unknown key(s) {clip(', '.join(unknown))}"] if unknown else []) + \
                ([f"missing key(s) {', '.join(missing)}"] if missing else [])
        raise UserError(f"{what} has {' and '.join(parts)}; the keys are {', '.join(space)}.")
    return {name: check_value(name, config[name], *space[name], what=what)
            for name in space if name in config}




def hms(seconds):
    """'1:02:03' (and '2 days, 1:02:03'); '?' for an unknown time or one beyond a million days."""
    if seconds is None or not math.isfinite(seconds) or abs(seconds) >= 1e6 * 86400:
        return "?"
    days, rest = divmod(int(seconds), 86400)  # timedelta itself overflows past 10**9 days
    clock = str(datetime.timedelta(seconds=rest))
    return f"{days} day{'s' * (abs(days) != 1)}, {clock}" if days else clock  # timedelta's own form
