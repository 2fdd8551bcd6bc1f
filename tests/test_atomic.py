"""Atomic writes: a save killed at any moment leaves the old file or the complete new one, and no litter.

The kill tests run the real writers (HDF5 results, a checkpoint, the traces
CSV) in a child Python process and SIGKILL it at chosen moments. To pay for
importing torch once, a helper process started with ``subprocess`` (this file
run as a script) imports the package and forks one writer per test; the test
kills the writer itself and the helper reaps it. The writer marks its progress
with files in a separate folder (``writing``, ``renaming``, ``done``); the test
polls for them, and for the temporary file growing, to choose the moment.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_retina._atomic import PARTIAL_SUFFIX, STALE_AFTER_S, atomic_write, remove_stale, temp_pattern

#: bytes the temporary file must hold before a "during" kill
GROWN = 256 * 1024


# ------------------------------------------------- the writers under test ---
# version 0: the old file; 1: the large new one the writer process saves; 2: the next save

def _h5_data(version: int) -> np.ndarray:
    n = 1_500_000 if version == 1 else 100  # 12 MB, gzip-compressed by write_results
    return np.random.default_rng(version).standard_normal(n)


def _model(version: int):
    import torch

    import napari_retina as nr

    torch.manual_seed(version)
    n_cells = 800 if version == 1 else 2  # 800 cells: a 23 MB readout
    return nr.RetinaCNN(nr.ModelConfig(history=6, size=36, channels=(4, 8), kernels=(5, 3), n_cells=n_cells)).eval()


def _traces(version: int):
    T = 40_000 if version == 1 else 20
    rng = np.random.default_rng(version)
    return SimpleNamespace(response=rng.standard_normal(T).astype(np.float32), rates=rng.random(T).astype(np.float32),
                           channels=rng.standard_normal((T, 8)).astype(np.float32))


def write_version(kind: str, path: Path, version: int) -> None:
    """Save version ``version`` of ``kind`` to ``path`` with the package's own writer."""
    if kind == "h5":
        from napari_retina.io import write_results

        write_results(path, {"x": _h5_data(version), "meta": {"version": version}})
    elif kind == "checkpoint":
        import napari_retina as nr

        nr.save_model(_model(version), path)
    else:
        from napari_retina.io import write_traces_csv

        write_traces_csv(path, _traces(version))


def holds_version(kind: str, path: Path, version: int, reference: Path) -> bool:
    """Whether ``path`` holds the complete version ``version`` (``reference``: a folder for a copy to compare)."""
    if kind == "h5":
        import h5py

        with h5py.File(path, "r") as f:
            return f["meta"].attrs["version"] == version and np.array_equal(f["x"][()], _h5_data(version))
    if kind == "checkpoint":
        import torch

        import napari_retina as nr

        loaded, want = nr.load_model(path).state_dict(), _model(version).state_dict()
        return loaded.keys() == want.keys() and all(torch.equal(loaded[k], want[k]) for k in want)
    write_version(kind, reference / path.name, version)
    return path.read_bytes() == (reference / path.name).read_bytes()


# ----------------------------------------------- the writer and its helper ---

def _writer(kind: str, dest: str, markers: str, moment: str) -> None:
    """Save version 1 of ``kind`` to ``dest``, marking progress in ``markers``; then wait to be killed."""
    marks = Path(markers)
    os.nice(19)  # yield the CPU to the test that polls for the moment to kill
    if moment == "renaming":  # hold the writer once the data are complete, before the rename
        def held(src, dst):
            (marks / "renaming").touch()
            time.sleep(600)

        os.replace = held
    (marks / "writing").touch()
    write_version(kind, Path(dest), 1)
    (marks / "done").touch()
    time.sleep(600)


def _helper() -> None:
    """Import the package once, then per ``spawn`` line fork a writer (print its pid); per ``reap``, reap it."""
    import h5py  # noqa: F401

    import napari_retina.checkpoint  # noqa: F401  (imports torch)
    import napari_retina.io  # noqa: F401

    print("ready", flush=True)
    pid = None
    for line in sys.stdin:
        command, *args = line.rstrip("\n").split("\t")
        if command == "spawn":
            pid = os.fork()
            if pid == 0:
                try:
                    _writer(*args)
                except BaseException:
                    (Path(args[2]) / "failed").write_text(traceback.format_exc())
                finally:
                    os._exit(1)
            print(pid, flush=True)
        elif command == "reap":
            print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)


@pytest.fixture(scope="module")
def helper():
    if not hasattr(os, "fork"):
        pytest.skip("the kill tests fork writer processes (POSIX)")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, __file__, "--helper"], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()


def _ask(helper: subprocess.Popen, *words: str) -> int:
    helper.stdin.write("\t".join(words) + "\n")
    helper.stdin.flush()
    return int(helper.stdout.readline())


# ------------------------------------------------------------ kill tests ---

def _temps(dest: Path) -> list[Path]:
    pattern = temp_pattern(dest)
    return [p for p in dest.parent.iterdir() if pattern.fullmatch(p.name)]


def _check_alive(marks: Path) -> None:
    failed = marks / "failed"
    assert not failed.exists(), f"the writer failed: {failed.read_text()}"


def _wait_for(mark: Path) -> None:
    """Poll until ``mark`` exists; fail if the save finished without creating it.

    "done" is read before ``mark``: a writer creates every mark before "done", so a
    "done" seen first means ``mark`` already exists unless the save skipped it.
    """
    while True:
        done = (mark.parent / "done").exists()
        if mark.exists():
            return
        _check_alive(mark.parent)
        assert not done, f"the save finished without reaching {mark.name!r}"
        time.sleep(0.002)


def _grown(dest: Path, done: Path) -> bool:
    """Poll until the file being written holds GROWN bytes (True) or the save is done (False).

    The file being written is the temporary file, or the destination itself
    for a writer that is not atomic (the old file is smaller than GROWN).
    """
    while not done.exists():
        _check_alive(done.parent)
        for path in [*_temps(dest), dest]:
            with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
                if path.stat().st_size >= GROWN:
                    return True
        time.sleep(0.001)
    return False


KINDS = {"h5": "results.h5", "checkpoint": "model.pt", "csv": "traces.csv"}
CASES = [("h5", "before"), ("h5", "during"), ("h5", "renaming"), ("h5", "after"),
         ("checkpoint", "during"), ("checkpoint", "after"), ("csv", "during"), ("csv", "renaming")]


@pytest.mark.parametrize("kind, moment", CASES)
def test_killed_save_leaves_old_or_new_file_and_next_save_cleans_up(helper, tmp_path, kind, moment):
    folder, marks, reference = tmp_path / "out", tmp_path / "marks", tmp_path / "reference"
    for d in (folder, marks, reference):
        d.mkdir()
    dest = folder / KINDS[kind]
    write_version(kind, dest, 0)
    old = dest.read_bytes()
    assert len(old) < GROWN

    pid = _ask(helper, "spawn", kind, str(dest), str(marks), moment)
    try:  # the helper reaps the writer only when asked: until then its pid cannot be reused
        if moment == "during":
            _wait_for(marks / "writing")
            assert _grown(dest, marks / "done"), "the save finished before its temporary file was seen growing"
        else:
            _wait_for(marks / {"before": "writing", "renaming": "renaming", "after": "done"}[moment])
    finally:
        os.kill(pid, signal.SIGKILL)
        status = _ask(helper, "reap")
    assert status == -signal.SIGKILL

    if moment == "before":  # killed as the save began: either file, never a part
        assert dest.read_bytes() == old or holds_version(kind, dest, 1, reference)
    elif moment == "after":
        assert holds_version(kind, dest, 1, reference)
    else:
        assert dest.read_bytes() == old
    leftovers = _temps(dest)
    assert sorted(p.name for p in folder.iterdir()) == sorted([dest.name] + [p.name for p in leftovers])
    if moment in ("during", "renaming"):
        assert len(leftovers) == 1 and not leftovers[0].name.endswith(dest.suffix)

    write_version(kind, dest, 2)  # the next save removes the dead writer's temporary file
    assert sorted(p.name for p in folder.iterdir()) == [dest.name]
    assert holds_version(kind, dest, 2, reference)


# ---------------------------------------------------- naming and the rule ---

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def _host() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def test_temporary_file_is_hidden_from_readers_and_globs(tmp_path):
    dest = tmp_path / "rates.h5"
    seen = {}

    def write(tmp: str) -> None:
        seen["name"] = Path(tmp).name
        seen["glob"] = sorted(p.name for p in tmp_path.glob("*.h5"))
        Path(tmp).write_bytes(b"new")

    atomic_write(dest, write)
    assert seen["name"].startswith(f".rates.h5.{_host()}-{os.getpid()}.") and seen["name"].endswith(PARTIAL_SUFFIX)
    assert temp_pattern(dest).fullmatch(seen["name"]) and seen["glob"] == []
    assert dest.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["rates.h5"]


def test_stale_rule_removes_only_dead_writers_files_of_this_destination(tmp_path):
    dest = tmp_path / "a.h5"
    dead, alive, host = _dead_pid(), os.getpid(), _host()
    old = time.time() - STALE_AFTER_S - 60
    files = {
        f".a.h5.{host}-{dead}.x1y2z3.partial": True,          # this machine, writer gone
        f".a.h5.{host}-{alive}.x1y2z3.partial": False,        # this machine, writer alive
        f".a.h5.00000000-{dead}.x1y2z3.partial": False,       # another machine, recent
        f".a.h5.00000001-{dead}.x1y2z3.partial": True,        # another machine, an hour old
        f".a.h5.bak.{host}-{dead}.x1y2z3.partial": False,     # another destination's
        f".xa.h5.{host}-{dead}.x1y2z3.partial": False,        # another destination's
        f".a.h5.{host}-{dead}.x1y2z3.partial.h5": False,      # not the pattern
        ".a.h5.notes": False,
    }
    for name in files:
        (tmp_path / name).write_bytes(b"x")
    os.utime(tmp_path / f".a.h5.00000001-{dead}.x1y2z3.partial", (old, old))
    (tmp_path / f".a.h5.{host}-{dead}.dir.partial").mkdir()            # a folder: never removed
    (tmp_path / f".a.h5.{host}-{dead}.link.partial").symlink_to(tmp_path / ".a.h5.notes")  # a link: neither
    removed = remove_stale(dest)
    assert sorted(p.name for p in removed) == sorted(n for n, stale in files.items() if stale)
    for name, stale in files.items():
        assert (tmp_path / name).exists() != stale, name
    assert (tmp_path / f".a.h5.{host}-{dead}.dir.partial").is_dir()
    assert (tmp_path / f".a.h5.{host}-{dead}.link.partial").is_symlink()


def test_a_concurrent_writers_temporary_file_survives_another_save(tmp_path):
    """A second save of the same destination while the first is writing leaves the first's file alone."""
    dest = tmp_path / "r.h5"
    log = {}

    def outer(tmp: str) -> None:
        Path(tmp).write_bytes(b"first")
        atomic_write(dest, lambda inner: Path(inner).write_bytes(b"second"))
        log["survived"] = Path(tmp).read_bytes() == b"first"

    atomic_write(dest, outer)
    assert log["survived"] and dest.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    dest = tmp_path / "m.pt"
    dest.write_bytes(b"old")

    def broken(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(dest, broken)
    assert dest.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


if __name__ == "__main__" and sys.argv[1:] == ["--helper"]:
    _helper()


# ------------------------------------------------- a set of files, all or nothing ---

def _old_set(folder: Path) -> dict:
    folder.mkdir()
    for name in ("a.json", "a.png", "b.json"):
        (folder / name).write_text(f"old {name}")
    return {p.name: p.read_text() for p in folder.iterdir()}


def _as_found(folder: Path) -> dict:
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_a_set_replaces_every_file_and_removes_the_stale_ones(tmp_path):
    from napari_retina._atomic import atomic_write_set

    out = tmp_path / "out"
    _old_set(out)
    writers = {name: (lambda path, name=name: path.write_text(f"new {name}")) for name in ("a.json", "b.json")}
    assert atomic_write_set(out, writers, remove=["a.png"]) == [out / "a.json", out / "b.json"]
    assert _as_found(out) == {"a.json": "new a.json", "b.json": "new b.json"}   # no staging folder left


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_set_that_fails_or_is_cancelled_while_written_leaves_the_folder_as_it_was(tmp_path, failure):
    """An experiment run that failed or was cancelled between its files left a new osr.json beside an old
    osr.png and a battery.md of the run before."""
    from napari_retina._atomic import WriteError, atomic_write_set

    out = tmp_path / "out"
    old = _old_set(out)

    def second(path):
        raise failure

    writers = {"a.json": lambda path: path.write_text("new"), "a.png": second}
    with pytest.raises(WriteError if isinstance(failure, OSError) else KeyboardInterrupt) as info:
        atomic_write_set(out, writers, remove=["b.json"])
    assert _as_found(out) == old
    if isinstance(failure, OSError):   # named after the destination, not the staging folder
        assert str(info.value) == f"cannot write {str(out / 'a.png')!r}: No space left on device"


def test_a_ctrl_c_while_the_set_is_moved_in_waits_for_the_last_file(tmp_path, monkeypatch):
    import napari_retina._atomic as atomic

    out = tmp_path / "out"
    _old_set(out)
    real = os.replace

    def replace_after_ctrl_c(src, dst):
        os.kill(os.getpid(), signal.SIGINT)   # arrives between the renames
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace_after_ctrl_c)
    writers = {name: (lambda path, name=name: path.write_text(f"new {name}")) for name in ("a.json", "a.png")}
    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write_set(out, writers)
    assert _as_found(out) == {"a.json": "new a.json", "a.png": "new a.png", "b.json": "old b.json"}


def test_a_killed_writers_staging_folder_is_removed_by_the_next_set(tmp_path):
    from napari_retina._atomic import _host_tag, atomic_write_set

    out = tmp_path / "out"
    _old_set(out)
    dead = _dead_pid()
    left = out / f".staging.{_host_tag()}-{dead}.x1y2{PARTIAL_SUFFIX}"
    live = out / f".staging.{_host_tag()}-{os.getpid()}.z3{PARTIAL_SUFFIX}"
    for folder in (left, live):
        folder.mkdir()
        (folder / "a.json").write_text("half")
    atomic_write_set(out, {"a.json": lambda path: path.write_text("new")})
    assert not left.exists() and live.exists()   # a live writer's folder is never touched


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX file size limits")
def test_an_hdf5_write_onto_a_full_disk_is_a_write_error_not_a_crash(tmp_path):
    """HDF5 writing to a disk that fills up fails as it closes its objects, and h5py then crashed the process
    (a segfault once the error was handled: exit 139 from `napari-retina attribute` under `ulimit -f`). A file
    size limit stands in for the full disk (Python ignores SIGXFSZ, so the write fails with EFBIG)."""
    import resource

    out = tmp_path / "r.h5"
    script = (
        "import numpy as np, napari_retina as nr\n"
        "from napari_retina._atomic import WriteError\n"
        "try:\n"
        f"    nr.io.write_results({str(out)!r}, {{'x': np.random.default_rng(0).standard_normal((8, 100_000))}})\n"
        "except WriteError as exc:\n"
        "    print('WriteError:', exc)\n")

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    done = subprocess.run([sys.executable, "-c", script], preexec_fn=limit_file_size, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"WriteError: cannot write {str(out)!r}: File too large"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX file size limits")
def test_a_checkpoint_saved_onto_a_full_disk_is_a_write_error_not_a_torch_traceback(tmp_path):
    """torch.save onto a full disk raised a RuntimeError from its zip writer ('enforce fail at
    inline_container.cc'), which no caller reads as a failed write: `napari-retina train` ended in a traceback."""
    import resource

    out = tmp_path / "m.pt"
    script = (
        "import napari_retina as nr\n"
        "from napari_retina._atomic import WriteError\n"
        "model = nr.load_model()\n"
        "try:\n"
        f"    nr.save_model(model, {str(out)!r})\n"
        "except WriteError as exc:\n"
        "    print('WriteError:', exc)\n")

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))   # the shipped model is ~0.5 MB

    done = subprocess.run([sys.executable, "-c", script], preexec_fn=limit_file_size, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"WriteError: cannot write {str(out)!r}: File too large"
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------- what is at the destination ---

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_a_pipe_at_the_destination_is_refused_before_the_write_and_left_a_pipe(tmp_path):
    """Renamed over, a pipe (or a device: /dev/null, /dev/full as root) became a plain file holding the save."""
    import stat

    from napari_retina._validate import NotAFileError

    fifo = tmp_path / "r.h5"
    os.mkfifo(fifo)
    called = []
    with pytest.raises(NotAFileError, match=r"^cannot write '.*r\.h5': it is not a regular file \(a device, pipe "
                                            r"or socket\), which a saved file would replace; give a file name$"):
        atomic_write(fifo, called.append)
    assert not called and stat.S_ISFIFO(os.lstat(fifo).st_mode) and sorted(tmp_path.iterdir()) == [fifo]
    assert isinstance(NotAFileError("x"), ValueError) and isinstance(NotAFileError("x"), OSError)


def test_a_symbolic_link_is_written_through_and_kept(tmp_path):
    """The link was replaced by a plain file and its target left with the old content."""
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "m.pt"
    target.write_bytes(b"old")
    link = tmp_path / "latest.pt"
    link.symlink_to(target)
    assert atomic_write(link, lambda tmp: Path(tmp).write_bytes(b"new")) == link
    assert link.is_symlink() and os.readlink(link) == str(target) and target.read_bytes() == b"new"
    dangling = tmp_path / "next.pt"
    dangling.symlink_to(tmp_path / "data" / "n.pt")           # a link to a file not written yet: created there
    atomic_write(dangling, lambda tmp: Path(tmp).write_bytes(b"n"))
    assert dangling.is_symlink() and (tmp_path / "data" / "n.pt").read_bytes() == b"n"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["m.pt", "n.pt"]   # no temporary file left
    folder_link = tmp_path / "folder"
    folder_link.symlink_to(tmp_path / "data")
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        atomic_write(folder_link, lambda tmp: Path(tmp).write_bytes(b"x"))


def test_the_umask_is_read_without_being_changed(monkeypatch):
    """The umask was read by setting it to 0 and back: for that moment another thread's new files were
    writable by anyone. On Linux it is read from /proc/self/status; it equals what os.umask says."""
    from napari_retina import _atomic

    old = os.umask(0o027)
    try:
        calls = []
        real = os.umask
        monkeypatch.setattr(_atomic.os, "umask", lambda mask: calls.append(mask) or real(mask))
        if not os.path.exists("/proc/self/status"):
            pytest.skip("no /proc/self/status: the umask is read by setting it")
        assert _atomic._umask() == 0o027 and calls == []
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_a_written_file_has_the_mode_a_new_file_would_have(tmp_path, mask):
    """The temporary file is made by mkstemp (mode 0600: the owner's only); before it is renamed into place it
    gets 0666 less the umask, as ``open(path, "w")`` would give it: 0644 under umask 022, 0600 under 077."""
    old = os.umask(mask)
    try:
        path = atomic_write(tmp_path / "a.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
