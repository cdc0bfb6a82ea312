"""scandir/walk use the stats the listing carries; public calls are typed
and documented; a forked child of a process that loaded the runtime is
refused instead of hanging."""

import errno
import faulthandler
import gc
import inspect
import os
import signal
import stat
import threading
import time

import pytest

import emberfs
from emberfs import _runtime


def _tree(fs, root):
    fs.makedirs(f"{root}/d1/d2")
    for p, data in ((f"{root}/a b ü.txt", b"1234"), (f"{root}/d1/f", b"x" * 300), (f"{root}/d1/d2/g", b"")):
        with fs.open(p, "wb") as f:
            f.write(data)
    fs.symlink("d1", f"{root}/to-d1")
    fs.symlink("missing", f"{root}/dangling")


def test_scandir_stats_come_with_the_listing(fs, tmpdir_fs, monkeypatch):
    _tree(fs, tmpdir_fs)
    want = {n: fs.lstat(f"{tmpdir_fs}/{n}") for n in fs.listdir(tmpdir_fs)}
    entries = list(fs.scandir(tmpdir_fs))

    def no_stat(*a, **k):
        raise AssertionError("scandir entry asked meta for a stat the listing carried")

    monkeypatch.setattr(fs, "_stat", no_stat)
    assert [e.name for e in entries] == sorted(want) == ["a b ü.txt", "d1", "dangling", "to-d1"]
    for e in entries:
        assert e.stat(follow_symlinks=False) == want[e.name]
        assert e.path == f"{tmpdir_fs}/{e.name}" and os.fspath(e) == e.path
    by = {e.name: e for e in entries}
    assert by["a b ü.txt"].is_file() and by["a b ü.txt"].stat().st_size == 4
    assert by["d1"].is_dir() and not by["d1"].is_symlink()
    assert by["to-d1"].is_symlink() and not by["to-d1"].is_dir(follow_symlinks=False)
    monkeypatch.undo()
    # Following a link is the one case that asks meta.
    assert by["to-d1"].is_dir() and by["to-d1"].stat().st_ino == want["d1"].st_ino
    assert not by["dangling"].is_file() and not by["dangling"].is_dir()


def test_walk_matches_the_tree(fs, tmpdir_fs, monkeypatch):
    _tree(fs, tmpdir_fs)
    monkeypatch.setattr(fs, "_stat", lambda *a: (_ for _ in ()).throw(AssertionError("stat per entry")))
    got = list(fs.walk(tmpdir_fs))
    assert got == [
        (tmpdir_fs, ["d1"], ["a b ü.txt", "dangling", "to-d1"]),
        (f"{tmpdir_fs}/d1", ["d2"], ["f"]),
        (f"{tmpdir_fs}/d1/d2", [], ["g"]),
    ]
    # topdown pruning, bottom-up order
    pruned = []
    for top, dirs, files in fs.walk(tmpdir_fs):
        pruned.append(top)
        dirs.clear()
    assert pruned == [tmpdir_fs]
    assert [t for t, _, _ in fs.walk(tmpdir_fs, topdown=False)] == [f"{tmpdir_fs}/d1/d2", f"{tmpdir_fs}/d1", tmpdir_fs]
    errs = []
    assert list(fs.walk(f"{tmpdir_fs}/nope", onerror=errs.append)) == []
    assert isinstance(errs[0], FileNotFoundError) and errs[0].errno == errno.ENOENT


def test_scandir_errors_carry_errno_and_path(fs, tmpdir_fs):
    with pytest.raises(FileNotFoundError) as ei:
        fs.scandir(f"{tmpdir_fs}/nope")
    assert ei.value.errno == errno.ENOENT and ei.value.filename == f"{tmpdir_fs}/nope"
    with fs.open(f"{tmpdir_fs}/file", "wb"):
        pass
    with pytest.raises(NotADirectoryError) as ei:
        fs.scandir(f"{tmpdir_fs}/file")
    assert ei.value.errno == errno.ENOTDIR
    assert list(fs.scandir(tmpdir_fs))[0].is_file()


def test_public_client_calls_are_typed_and_documented():
    missing = []
    for name, fn in inspect.getmembers(emberfs.Client, inspect.isfunction):
        if name.startswith("_") and name != "__init__":
            continue
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not fn.__doc__:
            missing.append(f"{name}: no docstring")
        if any(p.annotation is inspect.Parameter.empty for p in params):
            missing.append(f"{name}: unannotated parameter")
        if name != "__init__" and sig.return_annotation is inspect.Signature.empty:
            missing.append(f"{name}: no return annotation")
    assert missing == []


def _stacks_of(pid: int, dump_path) -> str:
    """What a hung child is doing: the Python stack faulthandler dumped and
    each thread's kernel state (the system call it sits in)."""
    out = [f"faulthandler dump:\n{dump_path.read_text() if dump_path.exists() else '(none)'}"]
    try:
        for tid in sorted(os.listdir(f"/proc/{pid}/task")):
            fields = []
            for name in ("comm", "wchan", "syscall", "stack"):
                try:
                    with open(f"/proc/{pid}/task/{tid}/{name}") as f:
                        fields.append(f"{name}={f.read().strip()!r}")
                except OSError as exc:
                    fields.append(f"{name}: {exc.strerror}")
            out.append(f"thread {tid}: " + " ".join(fields))
    except OSError as exc:
        out.append(f"/proc/{pid}/task: {exc}")
    return "\n".join(out)


def _exit_code_of(pid: int, dump_path) -> int:
    """Wait for forked child pid; fail the test, saying where it is stuck,
    if it hangs."""
    for _ in range(600):  # a hang guard, not a timing assertion
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    stacks = _stacks_of(pid, dump_path)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"forked child hung calling EmberFS\n{stacks}")


def test_forked_child_is_refused_not_hung(fs, tmpdir_fs, tmp_path):
    assert _runtime.loaded()
    dump_path = tmp_path / "child-stacks.txt"
    dump = open(dump_path, "w")
    pid = os.fork()
    if pid == 0:  # child: must not touch pytest state; report through the exit code
        code = 1
        try:
            # Were the child to hang, this says where (read by the parent).
            faulthandler.dump_traceback_later(20, file=dump)
            try:
                fs.listdir(tmpdir_fs)
            except emberfs.ForkedRuntimeError as exc:
                code = 0 if "spawn" in str(exc) else 2
            try:
                emberfs.Client("127.0.0.1:1", "t")
                code = 3
            except emberfs.ForkedRuntimeError:
                pass
            # Dropping inherited Go objects must not call into Go either.
            emberfs._errors._local.__dict__.pop("err", None)
            gc.collect()
        finally:
            os._exit(code)
    dump.close()
    assert _exit_code_of(pid, dump_path) == 0
    assert fs.listdir(tmpdir_fs) == []  # the parent is unaffected


def test_fork_beside_a_thread_that_used_emberfs(fs, tmpdir_fs, tmp_path, monkeypatch):
    """A thread that called EmberFS is alive at fork(). In the child, Python
    frees that thread's state (its per-thread Err) inside fork() itself,
    before any after-fork hook runs; the Err's finalizer must not call into
    Go there: a call into the copied runtime hangs whenever fork() caught a
    runtime lock held (seen in CI, one run in several). A recorder in place
    of the extension's DecRef reports any call made in the child."""
    parent = os.getpid()
    rfd, wfd = os.pipe()
    real_dec = _runtime._ext_refcount["dec"]

    def recording_dec(handle):
        if os.getpid() != parent:
            os.write(wfd, b"D")  # a raw write: safe in the child
            return  # and do not hang it
        real_dec(handle)

    monkeypatch.setitem(_runtime._ext_refcount, "dec", recording_dec)
    ready, release = threading.Event(), threading.Event()

    def worker():
        fs.listdir(tmpdir_fs)  # this thread now holds an Err
        ready.set()
        release.wait()

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert ready.wait(60)
        pid = os.fork()
        if pid == 0:
            gc.collect()
            os._exit(0 if emberfs._runtime._forked_after_load else 4)
        assert _exit_code_of(pid, tmp_path / "none") == 0
    finally:
        release.set()
        t.join()
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        calls = r.read()
    assert calls == b"", f"{len(calls)} DecRef calls into Go in the forked child"
    assert fs.listdir(tmpdir_fs) == []  # the parent's calls still work
