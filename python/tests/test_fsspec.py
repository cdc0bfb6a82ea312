"""EmberFS through fsspec: fsspec's own abstract test suite, the entry
point, configuration, transactions and torch.distributed.checkpoint's
fsspec writer, against a real local cluster."""

import errno
import pickle
import posixpath
import uuid

import fsspec
import fsspec.tests.abstract as abstract
import pytest

import emberfs
from emberfs.filesystem import EmberFileSystem


class EmberFixtures(abstract.AbstractFixtures):
    @pytest.fixture(scope="class")
    @classmethod
    def fs(cls, cluster):
        return fsspec.filesystem("emberfs", mgmtd=cluster.mgmtd, token=cluster.token)

    @pytest.fixture
    def fs_join(self):
        return posixpath.join

    @pytest.fixture
    def fs_path(self, fs):
        p = f"/fsspec-{uuid.uuid4().hex[:12]}"
        fs.mkdir(p)
        yield p
        fs.rm(p, recursive=True)

    @pytest.fixture
    def supports_empty_directories(self):
        return True


# fsspec's shipped suites, unchanged.
class TestEmberCopy(abstract.AbstractCopyTests, EmberFixtures):
    pass


class TestEmberGet(abstract.AbstractGetTests, EmberFixtures):
    pass


class TestEmberPut(abstract.AbstractPutTests, EmberFixtures):
    pass


class TestEmberOpen(abstract.AbstractOpenTests, EmberFixtures):
    pass


class TestEmberPipe(abstract.AbstractPipeTests, EmberFixtures):
    pass


@pytest.fixture
def efs(cluster):
    return fsspec.filesystem("emberfs", mgmtd=cluster.mgmtd, token=cluster.token)


def test_protocol_is_registered_by_the_entry_point():
    # The installed wheel's entry point registers it (fsspec reads the
    # "fsspec.specs" group at import).
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="fsspec.specs") if ep.name == "emberfs"]
    assert [ep.value for ep in eps] == ["emberfs.filesystem:EmberFileSystem"]
    assert fsspec.get_filesystem_class("emberfs") is EmberFileSystem


def test_open_url_with_cluster_from_environment(cluster, tmpdir_fs, monkeypatch, fs):
    monkeypatch.setenv("EMBERFS_MGMTD", cluster.mgmtd)
    monkeypatch.setenv("EMBERFS_TOKEN", cluster.token)
    monkeypatch.setenv("EMBERFS_CONFIG", "/nonexistent/client.toml")  # never read: env has both
    url = f"emberfs://{tmpdir_fs}/new/dir/x.txt"  # parents made on write
    with fsspec.open(url, "w") as f:
        f.write("héllo\n")
    with fsspec.open(url, "r") as f:
        assert f.read() == "héllo\n"
    assert fs.open(f"{tmpdir_fs}/new/dir/x.txt", "rb").read() == "héllo\n".encode()
    # emberfs:///abs and emberfs://abs name the same file.
    assert fsspec.open(f"emberfs:///{tmpdir_fs.lstrip('/')}/new/dir/x.txt", "rb").open().read() == "héllo\n".encode()


def test_cluster_from_config_file(cluster, tmpdir_fs, tmp_path, monkeypatch):
    monkeypatch.delenv("EMBERFS_MGMTD", raising=False)
    monkeypatch.delenv("EMBERFS_TOKEN", raising=False)
    cfg = tmp_path / "client.toml"
    cfg.write_text(f'mgmtd = ["{cluster.mgmtd}"]\ntoken = "{cluster.token}"\n')
    monkeypatch.setenv("EMBERFS_CONFIG", str(cfg))
    fs = fsspec.filesystem("emberfs", skip_instance_cache=True)
    fs.pipe_file(f"{tmpdir_fs}/c", b"from config")
    assert fs.cat_file(f"{tmpdir_fs}/c") == b"from config"
    # The default location, through XDG_CONFIG_HOME.
    monkeypatch.delenv("EMBERFS_CONFIG")
    (tmp_path / "emberfs").mkdir()
    (tmp_path / "emberfs" / "client.toml").write_text(cfg.read_text())
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert emberfs.config.resolve() == (cluster.mgmtd, cluster.token)


def test_bad_configuration_is_a_clear_error(tmp_path, monkeypatch):
    for k in ("EMBERFS_MGMTD", "EMBERFS_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no default file there
    monkeypatch.delenv("EMBERFS_CONFIG", raising=False)
    with pytest.raises(emberfs.ConfigError, match="no cluster address.*EMBERFS_MGMTD"):
        fsspec.filesystem("emberfs", skip_instance_cache=True)
    with pytest.raises(emberfs.ConfigError, match="no cluster token"):
        fsspec.filesystem("emberfs", mgmtd="127.0.0.1:1", skip_instance_cache=True)
    bad = tmp_path / "bad.toml"
    bad.write_text('mgmtd = "127.0.0.1:1"\ntokn = "x"\n')
    with pytest.raises(emberfs.ConfigError, match=r"unknown key\(s\) tokn"):
        emberfs.config.resolve(config=str(bad))
    bad.write_text('mgmtd = [1]\n')
    with pytest.raises(emberfs.ConfigError, match="not an address string"):
        emberfs.config.resolve(config=str(bad))
    with pytest.raises(FileNotFoundError):
        emberfs.config.resolve(config=str(tmp_path / "absent.toml"))


def test_info_ls_and_errors(efs, tmpdir_fs):
    efs.pipe_file(f"{tmpdir_fs}/a", b"12345")
    efs.mkdir(f"{tmpdir_fs}/sub")
    efs.client.symlink("a", f"{tmpdir_fs}/ln")
    efs.client.symlink("gone", f"{tmpdir_fs}/dangling")
    info = {i["name"]: i for i in efs.ls(tmpdir_fs, detail=True)}
    assert set(info) == {f"{tmpdir_fs}/{n}" for n in ("a", "sub", "ln", "dangling")}
    assert info[f"{tmpdir_fs}/a"]["type"] == "file" and info[f"{tmpdir_fs}/a"]["size"] == 5
    assert info[f"{tmpdir_fs}/sub"]["type"] == "directory"
    assert info[f"{tmpdir_fs}/ln"]["type"] == "file" and info[f"{tmpdir_fs}/ln"]["islink"]
    assert info[f"{tmpdir_fs}/ln"]["size"] == 5 and info[f"{tmpdir_fs}/ln"]["destination"] == "a"
    assert info[f"{tmpdir_fs}/dangling"]["type"] == "other"
    assert efs.ls(f"{tmpdir_fs}/a", detail=False) == [f"{tmpdir_fs}/a"]
    assert efs.info(f"emberfs://{tmpdir_fs}/a") == info[f"{tmpdir_fs}/a"]
    with pytest.raises(FileNotFoundError) as ei:
        efs.ls(f"{tmpdir_fs}/nope")
    assert ei.value.errno == errno.ENOENT and ei.value.filename == f"{tmpdir_fs}/nope"
    with pytest.raises(FileExistsError):
        efs.mkdir(f"{tmpdir_fs}/sub")
    with pytest.raises(IsADirectoryError):
        efs.rm(f"{tmpdir_fs}/sub")
    with pytest.raises(FileNotFoundError):
        efs.open(f"{tmpdir_fs}/nope", "rb")
    efs.rm(f"{tmpdir_fs}/ln")  # the link, not its target
    assert efs.cat_file(f"{tmpdir_fs}/a") == b"12345"
    assert efs.cat_file(f"{tmpdir_fs}/a", start=1, end=3) == b"23"
    assert efs.cat_file(f"{tmpdir_fs}/a", start=-2) == b"45"
    assert efs.cat_file(f"{tmpdir_fs}/a", start=3, end=99) == b"45"


def test_no_auto_mkdir_refuses_missing_parent(cluster, tmpdir_fs):
    fs = fsspec.filesystem("emberfs", mgmtd=cluster.mgmtd, token=cluster.token, auto_mkdir=False)
    with pytest.raises(FileNotFoundError):
        fs.pipe_file(f"{tmpdir_fs}/no/such/x", b"1")
    assert not fs.exists(f"{tmpdir_fs}/no")


def test_mv_is_a_rename(efs, tmpdir_fs):
    efs.pipe_file(f"{tmpdir_fs}/a", b"x" * 100)
    ino = efs.info(f"{tmpdir_fs}/a")["ino"]
    efs.mkdir(f"{tmpdir_fs}/d")
    efs.mv(f"{tmpdir_fs}/a", f"{tmpdir_fs}/d")  # into the directory
    assert efs.info(f"{tmpdir_fs}/d/a")["ino"] == ino and not efs.exists(f"{tmpdir_fs}/a")


def test_transaction_commits_atomically_or_discards(efs, tmpdir_fs):
    target = f"{tmpdir_fs}/t.bin"
    efs.pipe_file(target, b"old")
    with efs.transaction:
        with efs.open(target, "wb") as f:
            f.write(b"new data")
        assert efs.cat_file(target) == b"old"  # not yet published
    assert efs.cat_file(target) == b"new data"
    with pytest.raises(RuntimeError):
        with efs.transaction:
            with efs.open(target, "wb") as f:
                f.write(b"never")
            raise RuntimeError("abort")
    assert efs.cat_file(target) == b"new data"
    assert efs.ls(tmpdir_fs, detail=False) == [target]  # no temporary left behind


def test_instance_pickles_and_reconnects(efs, tmpdir_fs):
    efs.pipe_file(f"{tmpdir_fs}/p", b"pickled")
    fs2 = pickle.loads(pickle.dumps(efs))
    assert fs2.cat_file(f"{tmpdir_fs}/p") == b"pickled"


def test_torch_distributed_checkpoint_fsspec_writer(cluster, tmpdir_fs):
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter

    url = f"emberfs://{tmpdir_fs}/dcp"
    opts = dict(mgmtd=cluster.mgmtd, token=cluster.token)
    state = {"w": torch.arange(1000, dtype=torch.float32).reshape(10, 100), "b": torch.ones(7, dtype=torch.int64),
             "step": 42}
    dcp.save(state, storage_writer=FsspecWriter(url, sync_files=False, **opts))
    got = {"w": torch.zeros(10, 100), "b": torch.zeros(7, dtype=torch.int64), "step": 0}
    dcp.load(got, storage_reader=FsspecReader(url, **opts))
    assert torch.equal(got["w"], state["w"]) and torch.equal(got["b"], state["b"]) and got["step"] == 42
    fs = fsspec.filesystem("emberfs", **opts)
    assert ".metadata" in [posixpath.basename(p) for p in fs.ls(f"{tmpdir_fs}/dcp", detail=False)]
