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


def number_flag(kind, low, strict, what):
    """An argparse type: a number of `kind` at least `low` (above it if `strict`), else the error
    'must be <what>'. Numbers are read as floats first, so '1e5' is 100000 wherever a flag takes it."""
    def parse(text):
        value = _number(text, kind)
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
        return value
    return parse


positive_int = number_flag(int, 1, False, "a positive whole number")
nonnegative_int = number_flag(int, 0, False, "a whole number >= 0")
positive_float = number_flag(float, 0, True, "a number > 0")
nonnegative_float = number_flag(float, 0, False, "a number >= 0")


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
    """'1:02:03' (and '2 days, 1:02:03'); '?' for an unknown time."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    return str(datetime.timedelta(seconds=int(seconds)))
