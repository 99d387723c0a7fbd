"""Run folders and files written whole: make_run_dir, check_output, hold_run_folder (a lock), atomic_write."""

import contextlib
import errno
import glob
import itertools
import os
import re
import time
from pathlib import Path

from s5.config import one_of

# An empty run folder younger than this may be one a notebook made and has not trained in yet: kept.
EMPTY_FOLDER_KEPT_S = 600


def make_run_dir(root="runs", name="exp"):
    """A new, empty folder for one run: root/name, else root/name2, root/name3, ... (each made with one
    mkdir, so two runs started at once never share a folder). Returns its Path. Then sweeps what runs killed
    outright (kill -9) left in the earlier folders of that name (sweep_killed_runs)."""
    if name in ("", "..") or Path(name).name != name:  # "a/b", ".", "./x": a path, not a name
        raise ValueError(f"run name {name!r} is not a folder name; give one such as 'exp' (--runs-dir says where)")
    root = Path(root)
    try:
        _make_folder(root)
        for n in itertools.count(1):
            with contextlib.suppress(FileExistsError):
                path = root / (name if n == 1 else f"{name}{n}")
                path.mkdir()
                break
    except OSError as error:
        raise OSError(f"cannot make a run folder in {root}: {error.strerror or error}") from error
    try:
        sweep_killed_runs(root, name, keep=path)
    except BaseException:  # a stop meanwhile: the caller never learns of the new folder, so it goes too
        path.rmdir()
        raise
    return path


def sweep_killed_runs(root, name, keep=None):
    """Remove, in root's folders name, name2, ... (but `keep`), what a run killed outright left: the
    temporary files of its unfinished saves (their writer is gone), then the folder if that leaves it empty,
    or if it has been empty for EMPTY_FOLDER_KEPT_S (a run killed before its first save). A folder that a
    live run holds (hold_run_folder), or that cannot be locked to ask, is left alone; nothing here fails."""
    if os.name != "posix":  # flock, and os.kill(pid, 0) to ask whether a writer is alive: POSIX only
        return
    pattern = re.compile(re.escape(name) + r"([2-9]\d*|1\d+)?")  # what make_run_dir names
    with contextlib.suppress(OSError):
        for folder in sorted(Path(root).iterdir()):
            if folder != keep and pattern.fullmatch(folder.name) and folder.is_dir() and not folder.is_symlink():
                with contextlib.suppress(OSError):
                    _sweep_killed_run(folder)


def _sweep_killed_run(folder):
    import fcntl

    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError when held: left alone
        swept = False
        for entry in folder.iterdir():
            writer = _writer(entry)
            if writer is not None and writer != os.getpid() and not _alive(writer):
                entry.unlink()
                swept = True
        unchanged_for = time.time() - folder.stat().st_mtime
        if not any(folder.iterdir()) and (swept or unchanged_for > EMPTY_FOLDER_KEPT_S):
            folder.rmdir()
    finally:
        os.close(descriptor)


def check_output(path, overwrite=False):
    """Check, before any work, that `path` can be written: its folder exists (made when missing) and takes
    new files, and `path` holds no earlier file unless `overwrite`. Returns the Path."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; give another path, or --overwrite to replace it")
    try:
        _make_folder(path.parent)
        _sweep_temporaries(path)
        try:  # a stop that lands between the two calls leaves no file
            os.close(os.open(_temporary(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_temporary(path))
    except OSError as error:
        raise OSError(f"cannot write {path}: {error.strerror or error}") from error
    return path


def _make_folder(folder):
    """mkdir -p, with an error that names the file standing where a folder should be."""
    file = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if file is not None:
        raise NotADirectoryError(errno.ENOTDIR, f"{file} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def hold_run_folder(folder):
    """Hold `folder` for one training run while the block runs: a second process that asks for it (another
    train.py or notebook resuming the same run) gets BlockingIOError within a second (sweep_killed_runs may
    hold a folder for a moment) instead of mixing its epochs into this run's files. An advisory
    lock (flock) on the folder itself: nothing is written, and the system drops it when the process ends,
    however it ends. Where folders cannot be locked (Windows, some network file systems) it holds nothing."""
    try:
        import fcntl
        descriptor = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        for wait in (0.05, 0.1, 0.2, 0.3, 0.4, None):
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if wait is None:
                    raise BlockingIOError(f"{folder} is being trained by another process; wait for that run to end "
                                          "or stop it (two runs in one folder would mix their files)") from None
                time.sleep(wait)
            except OSError:  # no locks on this file system
                break
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def hold_output(path):
    """Hold the file `path` for one run while the block runs, as hold_run_folder holds a folder: a second run
    that names the same file (--checkpoint shared/mine.pt in two terminals) gets BlockingIOError at once
    instead of replacing the first run's file without a word. The lock is an empty file `.NAME.lock` beside
    it (flock'ed; the system drops it when the process ends, however it ends), removed when the block ends."""
    try:
        import fcntl
    except ImportError:  # Windows: held by nothing
        yield
        return
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    while True:
        try:
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # a folder that takes no files: check_output names it
            yield
            return
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise BlockingIOError(f"{path} is being written by another run; give this run another file, or wait for "
                                  "that run to end (two runs would replace each other's file)") from None
        except OSError:  # no locks on this file system
            break
        try:  # the lock file of a run that just ended (and removed it): take the new one instead
            if os.stat(lock).st_ino == os.fstat(descriptor).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(descriptor)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(descriptor)


def _temporary(path, pid=None):
    """Where atomic_write puts path's bytes before the rename: named for the writing process."""
    return path.with_name(f".{path.name}.{pid or os.getpid()}.tmp")


def _writer(temporary):
    """The id of the process that named `temporary` (as _temporary names it), or None if it is not so named."""
    match = re.fullmatch(r"\..+\.(\d+)\.tmp", temporary.name)
    return int(match[1]) if match else None


def _sweep_temporaries(path):
    """Remove the temporary files of path that writers killed mid-write left behind (their process is gone)."""
    if os.name != "posix":  # os.kill(pid, 0) only asks on POSIX
        return
    for temporary in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        writer = _writer(temporary)
        if writer is not None and (writer == os.getpid() or not _alive(writer)):
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process; not a process id (left alone)
        return True
    return True


def atomic_write(path, data):
    """Write the bytes `data` to `path` whole or not at all: a crash, an interrupt or a full disk leaves the
    previous file as it was. The bytes go to a temporary file beside it, then os.replace; a temporary left
    by a process killed mid-write is removed by the next write to the same path."""
    path = Path(path)
    try:
        _make_folder(path.parent)
        _sweep_temporaries(path)
        try:
            with open(_temporary(path), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(_temporary(path), path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_temporary(path))
    except OSError as error:
        raise OSError(f"cannot write {path}: {error.strerror or error}; any previous file is unchanged") from error


def check_plot_path(path, overwrite=False):
    """check_output for a figure, whose file type (from its extension) matplotlib must know."""
    from matplotlib.backend_bases import FigureCanvasBase

    kinds = FigureCanvasBase.get_supported_filetypes()
    if Path(path).suffix.lower().lstrip(".") not in kinds:
        raise ValueError(f"cannot save a plot as {path}: unknown file type; end the name in "
                         f"{one_of(['.' + kind for kind in ('png', 'pdf', 'svg', 'jpg')])} (or another of "
                         f"matplotlib's: {', '.join(sorted(kinds))})")
    return check_output(path, overwrite)
