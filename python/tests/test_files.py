"""File objects and namespace functions against a real cluster."""

import errno
import io
import os
import random
import threading

import pytest

import emberfs


def test_write_read_roundtrip(fs, tmpdir_fs):
    p = f"{tmpdir_fs}/hello.txt"
    with fs.open(p, "w") as f:
        f.write("hello, ember\n")
    with fs.open(p) as f:
        assert f.read() == "hello, ember\n"
    assert fs.getsize(p) == len("hello, ember\n")
    assert fs.isfile(p) and not fs.isdir(p)


def test_file_object_is_io_base(fs, tmpdir_fs):
    with fs.open(f"{tmpdir_fs}/b", "wb") as f:
        assert isinstance(f, io.BufferedIOBase)
        assert f.writable() and not f.readable() and f.seekable()
    with fs.open(f"{tmpdir_fs}/b", "rb", buffering=0) as f:
        assert isinstance(f, io.RawIOBase)
        with pytest.raises(io.UnsupportedOperation):
            f.write(b"x")


def test_readinto_fills_caller_memory(fs, tmpdir_fs):
    import numpy as np  # in the project venv; a missing numpy fails the test
    data = os.urandom(3 << 20)
    with fs.open(f"{tmpdir_fs}/n", "wb") as f:
        f.write(data)
    arr = np.zeros(len(data), dtype=np.uint8)
    with fs.open(f"{tmpdir_fs}/n", "rb", buffering=0) as f:
        got = 0
        while got < len(data):
            n = f.readinto(memoryview(arr)[got:])
            assert n > 0
            got += n
    assert arr.tobytes() == data


def test_read_bytes_whole_file_in_one_call(fs, tmpdir_fs):
    data = os.urandom(300_000)
    p = f"{tmpdir_fs}/whole"
    with fs.open(p, "wb") as f:
        f.write(data)
    assert fs.read_bytes(p) == data  # no hint: asks for the size first
    assert fs.read_bytes(p, size_hint=len(data)) == data
    assert fs.read_bytes(p, size_hint=10) == data  # too small: read again, sized
    assert fs.read_bytes(p, size_hint=len(data) + 999) == data  # too large: trimmed
    with fs.open(f"{tmpdir_fs}/empty", "wb"):
        pass
    assert fs.read_bytes(f"{tmpdir_fs}/empty", size_hint=0) == b""
    with pytest.raises(FileNotFoundError) as e:
        fs.read_bytes(f"{tmpdir_fs}/missing")
    assert e.value.filename == f"{tmpdir_fs}/missing"
    with pytest.raises(IsADirectoryError):
        fs.read_bytes(tmpdir_fs)


# Seeded random sequences of write/seek/read/truncate/tell compared with a
# local file opened the same way.
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_matches_local_file(fs, tmpdir_fs, tmp_path, seed):
    rng = random.Random(seed)
    local_path = tmp_path / "model"
    remote_path = f"{tmpdir_fs}/model"
    mode = rng.choice(["w+b", "r+b", "a+b"])
    local_path.write_bytes(b"seed-content" * 100)
    with fs.open(remote_path, "wb") as f:
        f.write(b"seed-content" * 100)
    buffering = rng.choice([0, -1, 4096])
    with open(local_path, mode, buffering=buffering) as lf, fs.open(remote_path, mode, buffering=buffering) as rf:
        for step in range(150):
            op = rng.choice(["write", "write", "read", "seek", "tell", "truncate", "flush", "readall"])
            if op == "write":
                b = rng.randbytes(rng.choice([1, 10, 1000, 70000]))
                assert rf.write(b) == lf.write(b), step
            elif op == "read":
                n = rng.choice([1, 100, 5000, 100000])
                assert rf.read(n) == lf.read(n), step
            elif op == "readall":
                assert rf.read() == lf.read(), step
            elif op == "seek":
                whence = rng.choice([0, 1, 2])
                off = rng.randint(0, 20000) if whence == 0 else rng.randint(-100, 100)
                try:
                    want = lf.seek(off, whence)
                except OSError as e:
                    with pytest.raises(OSError) as ei:
                        rf.seek(off, whence)
                    assert ei.value.errno == e.errno
                    continue
                assert rf.seek(off, whence) == want, step
            elif op == "tell":
                assert rf.tell() == lf.tell(), step
            elif op == "truncate":
                size = rng.randint(0, 30000)
                assert rf.truncate(size) == lf.truncate(size), step
            else:
                rf.flush()
                lf.flush()
    assert fs.open(remote_path, "rb").read() == local_path.read_bytes()


def test_errors_map_to_oserror_subclasses(fs, tmpdir_fs):
    d = tmpdir_fs
    with pytest.raises(FileNotFoundError) as ei:
        fs.open(f"{d}/missing")
    assert ei.value.errno == errno.ENOENT and ei.value.filename == f"{d}/missing"
    fs.mkdir(f"{d}/dir")
    with pytest.raises(FileExistsError):
        fs.mkdir(f"{d}/dir")
    with pytest.raises(IsADirectoryError):
        fs.open(f"{d}/dir", "wb")
    fs.open(f"{d}/file", "wb").close()
    with pytest.raises(NotADirectoryError):
        fs.listdir(f"{d}/file")
    with pytest.raises(FileExistsError):
        fs.open(f"{d}/file", "xb")
    fs.open(f"{d}/dir/inner", "wb").close()
    with pytest.raises(OSError) as ei:
        fs.rmdir(f"{d}/dir")
    assert ei.value.errno == errno.ENOTEMPTY
    with pytest.raises(FileNotFoundError):
        fs.remove(f"{d}/nope")
    with pytest.raises(OSError) as ei:
        fs.open(f"{d}/" + "x" * 256, "wb")
    assert ei.value.errno == errno.ENAMETOOLONG
    fs.chmod(f"{d}/dir", 0o500)
    fs.set_user(12345, 12345)
    try:
        with pytest.raises(PermissionError):
            fs.open(f"{d}/dir/new", "wb")
    finally:
        fs.set_user(os.getuid(), os.getgid())
    with pytest.raises(ValueError):
        fs.open(f"{d}/file", "rw")


def test_namespace_functions(fs, tmpdir_fs):
    d = tmpdir_fs
    fs.makedirs(f"{d}/a/b/c")
    fs.makedirs(f"{d}/a/b/c", exist_ok=True)
    with pytest.raises(FileExistsError):
        fs.makedirs(f"{d}/a/b/c")
    for name in ["x", "y"]:
        with fs.open(f"{d}/a/b/{name}", "wb") as f:
            f.write(name.encode())
    assert sorted(fs.listdir(f"{d}/a/b")) == ["c", "x", "y"]
    entries = {e.name: e for e in fs.scandir(f"{d}/a/b")}
    assert entries["c"].is_dir() and entries["x"].is_file()
    walked = list(fs.walk(f"{d}/a"))
    assert walked[0] == (f"{d}/a", ["b"], [])
    assert (f"{d}/a/b", ["c"], ["x", "y"]) in [(p, sorted(ds), sorted(fs_)) for p, ds, fs_ in walked]
    fs.rename(f"{d}/a/b/x", f"{d}/a/z")
    assert fs.exists(f"{d}/a/z") and not fs.exists(f"{d}/a/b/x")
    fs.symlink("z", f"{d}/a/link")
    assert fs.readlink(f"{d}/a/link") == "z"
    assert fs.open(f"{d}/a/link", "rb").read() == b"x"
    fs.link(f"{d}/a/z", f"{d}/a/hard")
    assert fs.stat(f"{d}/a/hard").st_nlink == 2
    fs.remove(f"{d}/a/hard")
    fs.truncate(f"{d}/a/z", 0)
    assert fs.getsize(f"{d}/a/z") == 0
    fs.rmtree(f"{d}/a")
    assert not fs.exists(f"{d}/a")


def test_threads_write_different_files(fs, tmpdir_fs):
    payloads = {i: os.urandom(256 * 1024 + i) for i in range(8)}
    errors = []

    def work(i):
        try:
            with fs.open(f"{tmpdir_fs}/t{i}", "wb") as f:
                for off in range(0, len(payloads[i]), 10000):
                    f.write(payloads[i][off:off + 10000])
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, data in payloads.items():
        assert fs.open(f"{tmpdir_fs}/t{i}", "rb").read() == data


def test_bad_connection_is_clear_error():
    with pytest.raises((emberfs.EmberFSError, OSError)):
        emberfs.Client("", "token")


def test_errors_carry_errno_and_code_as_data(fs):
    # Issue 13, hole 13: errno and the EmberFS code cross the binding as
    # data (an Err argument), not parsed out of message text; a name that
    # looks like an errno prefix changes nothing.
    import errno as errno_mod

    missing = "/[errno 13] not-there"
    with pytest.raises(FileNotFoundError) as info:
        fs.stat(missing)
    assert info.value.errno == errno_mod.ENOENT
    assert info.value.filename == missing
    assert info.value.emberfs_code == 3  # errcode.NotFound
    fs.mkdir("/errdata")
    with pytest.raises(IsADirectoryError) as info:
        fs.open("/errdata", "rb")
    assert info.value.errno == errno_mod.EISDIR
