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
