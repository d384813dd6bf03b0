"""Files every stage reads and writes: JSON and JSON-lines logs with errors that name the file,
atomic writes that honour the umask, checkpoints read with weights_only=True, the resume check, the
lock that keeps one run per output folder, and the provenance (package versions, code commit)
stored with every result."""
import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from machinery.cli import UserError, clip, excerpt

UMASK = os.umask(0o022)
os.umask(UMASK)  # read once, at import, in the main thread


# ----------------------------------------------------------------------------------------------------
# Files: JSON, JSON lines, atomic writes, checkpoints

def inline(text):
    """Whether a flag's text is JSON itself ('{...}', '[...]') rather than the name of a file."""
    return text.lstrip().startswith(("{", "["))


def json_where(text, what):
    """How an error names JSON given to `what` (a flag) as `text`: inline, or its file (briefly)."""
    return f"{what} (inline JSON)" if inline(text) else f"{what} file {clip(text, 200)}"


def read_json(text, what):
    """A JSON value given inline ('{...}') or as a file name; one sentence naming the file if not."""
    where, source = json_where(text, what), text
    if not inline(text):
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
    write_atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu", what="checkpoint"):
    """A dict saved by save_checkpoint, read with weights_only=True (tensors and plain Python only:
    a pickle payload is refused), or a CheckpointError that names the file."""
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
        changes = "; ".join(f"{key} {excerpt(old.get(key))} there, {excerpt(new.get(key))} now" for key in differ)
        raise error(f"{where} was made with other settings ({changes}): {fix}.")


def absolute(path):
    """A path as an absolute one, so that a folder resumed under another spelling is the same."""
    return None if path is None else str(Path(path).expanduser().resolve())


def file_digest(path):
    """The SHA-1 of a file's bytes: what a cached result was computed from."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------
# One run per output folder

@contextlib.contextmanager
def folder_lock(folder, flag="--out"):
    """Hold `folder`/.lock while the block runs, or a UserError naming the process that holds it.

    An advisory lock (flock): the kernel drops it when its holder exits however it exits, kill -9
    included, so it is never stale. The file says who holds it (pid, start, command) for the
    message. It is removed on the way out, and the folder too when this made it and it is empty,
    so a refused command leaves nothing behind; a run that opens the file just as it is removed
    locks a deleted file, sees that and tries again."""
    folder = Path(folder)
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _lock(folder / ".lock", flag)
    except OSError as e:
        raise UserError(f"cannot write {flag} {folder}: {e.strerror}; choose a writable place.") from None
    try:
        holder = {"pid": os.getpid(), "started": datetime.datetime.now().isoformat(timespec="seconds"),
                  "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(folder / ".lock")  # while still held: no other run has it
        os.close(fd)
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty


def _lock(path, flag):
    """A descriptor of `path`, exclusively locked, or a UserError naming the holder."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0)
            os.close(fd)
            raise UserError(f"{path.parent} is in use by {_holder(holder)}; wait for it to end, or give another "
                            f"{flag}.") from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return fd
        os.close(fd)  # its holder removed it as we opened it: lock the new one


def _holder(text):
    """'pid 123 (started 2026-01-01T10:00:00: python search.py ...)', from a lock file's text."""
    try:
        holder = json.loads(text)
        command = holder["command"] if len(holder["command"]) <= 100 else holder["command"][:97] + "..."
        return f"pid {holder['pid']} (started {holder['started']}: {command})"
    except (ValueError, KeyError, TypeError):
        return "another process (it is just starting)"


# ----------------------------------------------------------------------------------------------------
# Provenance

def versions():
    """Package versions and the code's git commit, stored with every result."""
    try:
        commit = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
    except OSError:
        commit = None
    return {"torch": str(torch.__version__), "python": sys.version.split()[0], "autokd": commit}
