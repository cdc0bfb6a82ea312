"""The built wheel installs into a fresh venv and works there."""

import os
import subprocess
import venv

SCRIPT = r"""
import emberfs
with emberfs.LocalCluster(storage=1, replicas=1) as cluster:
    fs = cluster.connect()
    with fs.open("/wheel-check", "wb") as f:
        f.write(b"x" * 100000)
    assert fs.open("/wheel-check", "rb").read() == b"x" * 100000
    from emberfs import kvcache
    kvcache.create(fs, "wheel", max_value_bytes=4096, capacity_bytes=1 << 20)
    with emberfs.KVCache(fs, "wheel") as kv:
        kv.put(b"k", b"v" * 4096)
        buf = bytearray(4096)
        assert kv.get_into(b"k", buf) == 4096 and buf == b"v" * 4096
    for mod, pkg in (("emberfs.integrations.vllm", "vLLM"), ("emberfs.integrations.lmcache", "LMCache")):
        try:
            __import__(mod)
            raise AssertionError(mod + " imported without its engine installed")
        except ImportError as e:
            assert pkg in str(e) and "pip install" in str(e), e
    fs.close()
print("wheel ok", emberfs.__version__, emberfs.__file__)
"""


def test_wheel_installs_into_fresh_venv(tmp_path):
    wheel = os.environ.get("EMBERFS_WHEEL")
    assert wheel, "EMBERFS_WHEEL must name the built wheel (make test-python sets it)"
    assert os.path.isfile(wheel), wheel
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], check=True)
    env = {k: v for k, v in os.environ.items() if k != "EMBERFS_BIN"}
    out = subprocess.run([py, "-c", SCRIPT], check=True, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert "wheel ok" in out.stdout
    # The package must come from the fresh venv, not from this checkout.
    assert out.stdout.split()[-1].startswith(str(env_dir)), out.stdout
