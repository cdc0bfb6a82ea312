"""pandas, pyarrow and Hugging Face datasets reading and writing
emberfs:// URLs through the fsspec file system, against a real local
cluster. Every write is checked by reading it back with the plain client
(not only through the library that wrote it), and every read of a file the
test wrote itself."""

import io
import uuid

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest


@pytest.fixture
def opts(cluster):
    """storage_options for pandas/datasets: the cluster to use."""
    return {"mgmtd": cluster.mgmtd, "token": cluster.token}


@pytest.fixture
def root(fs):
    p = f"/df-{uuid.uuid4().hex[:12]}"
    fs.mkdir(p)
    return p


@pytest.fixture
def frame():
    n = 1000
    return pd.DataFrame({
        "id": range(n),
        "name": [f"row {i}" for i in range(n)],
        "score": [i * 0.5 for i in range(n)],
        "split": ["train" if i % 4 else "test" for i in range(n)],
    })


def test_pandas_csv(fs, opts, root, frame):
    url = f"emberfs://{root}/sub/table.csv"  # the parent is created on write
    frame.to_csv(url, index=False, storage_options=opts)
    with fs.open(f"{root}/sub/table.csv", "rb") as f:
        raw = f.read()
    assert raw.startswith(b"id,name,score,split\n0,row 0,0.0,test\n")
    pd.testing.assert_frame_equal(pd.read_csv(io.BytesIO(raw)), frame)
    pd.testing.assert_frame_equal(pd.read_csv(url, storage_options=opts), frame)
    # Compressed, inferred from the name, both ways.
    frame.to_csv(url + ".gz", index=False, storage_options=opts)
    with fs.open(f"{root}/sub/table.csv.gz", "rb") as f:
        assert f.read(2) == b"\x1f\x8b"
    pd.testing.assert_frame_equal(pd.read_csv(url + ".gz", storage_options=opts), frame)
    with pytest.raises(FileNotFoundError):
        pd.read_csv(f"emberfs://{root}/missing.csv", storage_options=opts)


def test_pandas_parquet(fs, opts, root, frame):
    url = f"emberfs://{root}/table.parquet"
    frame.to_parquet(url, index=False, storage_options=opts)
    with fs.open(f"{root}/table.parquet", "rb") as f:
        raw = f.read()
    assert raw[:4] == b"PAR1" and raw[-4:] == b"PAR1"
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(raw)), frame)
    pd.testing.assert_frame_equal(pd.read_parquet(url, storage_options=opts), frame)
    # Column projection and row filters reach the file through seeks.
    got = pd.read_parquet(url, columns=["id", "split"], filters=[("split", "=", "test")], storage_options=opts)
    assert list(got.columns) == ["id", "split"] and list(got["id"]) == list(range(0, 1000, 4))


def test_pyarrow_parquet_and_dataset(cluster, fs, root, frame):
    efs = fsspec.filesystem("emberfs", mgmtd=cluster.mgmtd, token=cluster.token)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # pyarrow.parquet with the fsspec file system (wrapped by pyarrow).
    pq.write_table(table, f"{root}/one.parquet", filesystem=efs, row_group_size=100)
    assert pq.ParquetFile(io.BytesIO(fs.open(f"{root}/one.parquet", "rb").read())).num_row_groups == 10
    assert pq.read_table(f"{root}/one.parquet", filesystem=efs).equals(table)
    # A hive-partitioned dataset: a directory per split value.
    pq.write_to_dataset(table, f"{root}/ds", partition_cols=["split"], filesystem=efs)
    assert sorted(fs.listdir(f"{root}/ds")) == ["split=test", "split=train"]
    ds = pads.dataset(f"{root}/ds", format="parquet", partitioning="hive", filesystem=efs)
    assert ds.count_rows() == len(frame)
    test_ids = ds.to_table(columns=["id"], filter=pads.field("split") == "test").column("id").to_pylist()
    assert sorted(test_ids) == list(range(0, 1000, 4))
    # pyarrow.dataset writing, then reading back every row.
    pads.write_dataset(table, f"{root}/written", format="parquet", filesystem=efs, max_rows_per_file=300,
                       max_rows_per_group=300)
    files = sorted(fs.listdir(f"{root}/written"))
    assert len(files) == 4, files  # 1000 rows, 300 per file
    back = pads.dataset(f"{root}/written", format="parquet", filesystem=efs).to_table().sort_by("id")
    assert back.equals(table)


@pytest.fixture
def hf_local(tmp_path, monkeypatch):
    """Hugging Face datasets with its cache in a temp dir. (Its offline
    switches cannot be set: they refuse every non-local URL, emberfs://
    included; the packaged parquet/csv builders need no hub.)"""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    import datasets
    datasets.disable_progress_bars()
    return datasets, str(tmp_path / "hf-cache")


def test_hf_datasets_load_parquet_and_csv(hf_local, opts, root, frame):
    datasets, cache = hf_local
    for i in range(3):  # several files: data_files takes a glob
        frame.iloc[i::3].to_parquet(f"emberfs://{root}/pq/part-{i}.parquet", index=False, storage_options=opts)
    frame.to_csv(f"emberfs://{root}/all.csv", index=False, storage_options=opts)

    d = datasets.load_dataset("parquet", data_files=f"emberfs://{root}/pq/*.parquet", split="train",
                              cache_dir=cache, storage_options=opts)
    assert d.num_rows == len(frame)
    assert sorted(d["id"]) == list(range(len(frame)))
    assert d.filter(lambda r: r["split"] == "test").num_rows == 250

    c = datasets.load_dataset("csv", data_files={"train": f"emberfs://{root}/all.csv"}, cache_dir=cache,
                              storage_options=opts)
    assert c["train"].num_rows == len(frame)
    assert c["train"][7] == {"id": 7, "name": "row 7", "score": 3.5, "split": "train"}

    # Streaming reads the files through fsspec as it goes.
    s = datasets.load_dataset("parquet", data_files=f"emberfs://{root}/pq/*.parquet", split="train",
                              streaming=True, storage_options=opts)
    assert sorted(r["id"] for r in s) == list(range(len(frame)))


def test_hf_datasets_save_and_load_from_disk(hf_local, fs, opts, root, frame):
    datasets, _ = hf_local
    d = datasets.Dataset.from_pandas(frame, preserve_index=False)
    url = f"emberfs://{root}/saved"
    d.save_to_disk(url, storage_options=opts)
    names = fs.listdir(f"{root}/saved")
    assert "dataset_info.json" in names and "state.json" in names
    assert any(n.endswith(".arrow") for n in names), names
    back = datasets.load_from_disk(url, storage_options=opts)
    assert back.num_rows == len(frame)
    assert back.to_pandas().equals(frame)
