"""A real EmberFS cluster for the Python tests: `emberfs up` in a temp dir."""

import uuid

import pytest

import emberfs


@pytest.fixture(scope="session")
def cluster():
    with emberfs.LocalCluster(storage=3, replicas=3) as c:
        yield c


@pytest.fixture(scope="session")
def fs(cluster):
    c = emberfs.connect(cluster.mgmtd, cluster.token)
    yield c
    c.close()


@pytest.fixture
def tmpdir_fs(fs):
    """A fresh directory on EmberFS for one test."""
    path = f"/t-{uuid.uuid4().hex[:12]}"
    fs.mkdir(path)
    return path
