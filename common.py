"""The plumbing every stage shares, so that each stage file holds only its part of the paper.

    Parser, flag types     one parser per flag (`--max-params 1e5` means the same everywhere); a bad
                           command line is one line on stderr and exit status 2
    cli                    the wrapper of every stage's main(): a user's mistake (a missing file, a bad
                           value, a teacher for another data set) is one line on stderr and exit status 1
    check_config           the one checker of θ, τ and α for every entry point
    read_json, read_jsonl  JSON from a flag or a file, and JSON-lines logs, with errors that name the file
    write_json, save_checkpoint   atomic writes (temp file + rename) that honour the umask; one that
                           fails for lack of space names the folder and its free space (NoSpace)
    load_checkpoint        checkpoints read with weights_only=True
    check_resume           a resumed run must share its settings with the folder or file it continues

Exit status: 0 done, 1 the command could not be done (the message says why and what to do),
2 the command line itself is wrong, 130 interrupted.
"""
import argparse
import datetime
import errno
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

UMASK = os.umask(0o022)
os.umask(UMASK)  # read once, at import, in the main thread


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


def device_name(text):
    """A torch device this machine has: 'cpu', 'cuda', 'cuda:1'."""
    import torch
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
        raise UserError(f"{what}[{name!r}] must be a number in [{low}, {high}], not {value!r}.")
    if kind is int and value != int(value):
        raise UserError(f"{what}[{name!r}] must be an integer in [{low}, {high}], not {value!r}.")
    if not low <= value <= high:
        raise UserError(f"{what}[{name!r}] = {value} is outside its range [{low}, {high}].")
    return kind(value)


def check_config(config, space, optional=(), what="θ"):
    """config checked against space {name: (kind, low, high)}: every key known, every non-optional
    key present, every value of its kind and in range. Returns it with ints as int, floats as float."""
    if not isinstance(config, dict):
        raise UserError(f"{what} must be a JSON object with the keys {', '.join(space)}, not "
                        f"{type(config).__name__}.")
    unknown = sorted(set(config) - set(space))
    missing = [name for name in space if name not in config and name not in optional]
    if unknown or missing:
        parts = ([f"unknown key(s) {', '.join(unknown)}"] if unknown else []) + \
                ([f"missing key(s) {', '.join(missing)}"] if missing else [])
        raise UserError(f"{what} has {' and '.join(parts)}; the keys are {', '.join(space)}.")
    return {name: check_value(name, config[name], *space[name], what=what)
            for name in space if name in config}


# ----------------------------------------------------------------------------------------------------
# Files: JSON, JSON lines, atomic writes, checkpoints

def read_json(text, what):
    """A JSON value given inline ('{...}') or as a file name; one sentence naming the file if not."""
    if text.lstrip().startswith(("{", "[")):
        source, where = text, f"{what} (inline JSON)"
    else:
        where = f"{what} file {text}"
        try:
            source = Path(text).read_text()
        except IsADirectoryError:
            raise UserError(f"{where} is a folder; give a JSON file.") from None
        except UnicodeDecodeError:
            raise UserError(f"{where} is not a text file; give a JSON file.") from None
        except OSError as e:
            raise UserError(f"cannot read {where}: {e.strerror}.") from None
    try:
        return json.loads(source)
    except json.JSONDecodeError as e:
        raise UserError(f"{where} is not valid JSON ({e.msg} at line {e.lineno}).") from None


def read_jsonl(path):
    """(records, whole) of a JSON-lines log: a last line cut short by a kill mid-write is ignored
    (`whole` is the byte length of the whole lines; a writer truncates there before appending; a
    reader never writes). A damaged line elsewhere is a UserError naming the file and line."""
    path = Path(path)
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    whole = data.rfind(b"\n") + 1
    records = []
    for number, line in enumerate(data[:whole].split(b"\n")[:-1], 1):
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{path} line {number} is not JSON: the log is only ever appended to, so "
                            "restore it or start a new output folder.") from None
    return records, whole


def open_log(path, whole):
    """Open a JSON-lines log for appending after its `whole` lines (drops a torn last line)."""
    f = open(path, "ab")
    f.truncate(whole)
    return f


def append_jsonl(f, record, default=None):
    """Append one record and make it durable before anything else happens (a line cut short by a
    full disk is dropped when the log is next opened, as after a kill)."""
    try:
        f.write((json.dumps(record, default=default) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())
    except OSError as error:
        raise no_space(Path(f.name), error) or error


def write_atomic(path, write):
    """Call write(file) on a temporary file beside `path`, then rename it over `path`: a kill or a
    full disk never leaves half a file (the previous one stays as it was), and the file gets the
    umask's mode like any other (not tempfile's 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = None
    try:
        f = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as error:
        # said before the part written is deleted: deleting it frees its space
        full = no_space(path, error, os.stat(f.name).st_size if f is not None else 0)
        if f is not None:
            os.unlink(f.name)
        raise full or error
    os.chmod(f.name, 0o666 & ~UMASK)
    os.replace(f.name, path)


class NoSpace(UserError):
    """A write that failed for lack of space; the message names the folder and its free space."""


def no_space(path, error, written=None):
    """A NoSpace for the failed write of `path` (`written` bytes of it done) if `error` says the disk
    or quota is full, else None. torch.save's zip writer turns a failed write into the RuntimeError
    "[enforce fail at inline_container.cc] unexpected pos": the write stopped short."""
    full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    short = isinstance(error, RuntimeError) and "inline_container" in str(error)
    if not (full or short):
        return None
    folder = path.parent.absolute()
    free = nbytes(shutil.disk_usage(folder).free)
    done = "" if written is None else f" after {nbytes(written)}"
    kept = f"; {path.name} is as it was" if path.exists() and written is not None else ""
    what = f"no space left in {folder} for {path.name}: the write failed" if full else \
        f"writing {path.name} into {folder} stopped short (torch's zip writer could not write)"
    return NoSpace(f"{what}{done} with {free} free; free some space there or choose another folder{kept}.")


def nbytes(n):
    """A size in bytes for people: '512 B', '61.5 KiB', '1.4 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def write_json(path, obj):
    write_atomic(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def check_writable(path, what):
    """Fail now, before any training, if `path` cannot be written (its folder is made if needed)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name, e.g. {path / 'run.pt'}.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as e:
        raise UserError(f"cannot write {what} {path}: {e.strerror}; choose a writable place.") from None


class CheckpointError(UserError):
    """A checkpoint file that cannot be used; the message names the file and the fix."""


def save_checkpoint(path, state):
    import torch
    write_atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu", what="checkpoint"):
    """A dict saved by save_checkpoint, read with weights_only=True (tensors and plain Python only:
    a pickle payload is refused), or a CheckpointError that names the file."""
    import torch
    if not Path(path).is_file():
        raise CheckpointError(f"{what} {path} not found; check the path.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises pickle, zip, EOF and runtime errors for damaged files
        raise CheckpointError(f"{path} is not a readable {what} ({type(e).__name__}); it is damaged "
                              f"or not from train.py: delete it or give another.") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a {what} written by train.py.")
    return state


def check_resume(old, new, keys, where, fix="re-run with the same flags to resume it, or give another --out",
                 error=UserError):
    """An `error` naming the settings (among `keys`) in which `new` differs from `old`."""
    differ = [key for key in keys if old.get(key) != new.get(key)]
    if differ:
        def short(value):
            text = json.dumps(value, default=str)
            return text if len(text) <= 60 else text[:57] + "..."
        changes = "; ".join(f"{key} {short(old.get(key))} there, {short(new.get(key))} now" for key in differ)
        raise error(f"{where} was made with other settings ({changes}): {fix}.")


def absolute(path):
    """A path as an absolute one, so that a folder resumed under another spelling is the same."""
    return None if path is None else str(Path(path).expanduser().resolve())


def file_digest(path):
    """The SHA-1 of a file's bytes: what a cached result was computed from."""
    import hashlib
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------
# Provenance and time

def versions():
    """Package versions and the code's git commit, stored with every result."""
    import torch
    try:
        commit = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
    except OSError:
        commit = None
    return {"torch": str(torch.__version__), "python": sys.version.split()[0], "autokd": commit}


def hms(seconds):
    """'1:02:03' (and '2 days, 1:02:03'); '?' for an unknown time."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    return str(datetime.timedelta(seconds=int(seconds)))
