"""emberfs.checkpoint: save/load state_dicts as sharded, atomically published
checkpoints; async save; latest pointer, retention, list/inspect/remove."""

from __future__ import annotations

import base64
import concurrent.futures
import errno
import json
import posixpath
import threading
from dataclasses import dataclass, field

from . import _plan, _store, _tree
from ._store import CheckpointError, Progress

DEFAULT_CONCURRENCY = 8


def _client(client, fs):
    from .. import _client as default_client

    if client is not None and fs is not None and client is not fs:
        raise ValueError("pass client= or fs=, not both")
    return default_client(client if client is not None else fs)


# -- save ------------------------------------------------------------------

def _python_metadata(skeleton_bytes: bytes, plan) -> dict:
    import torch

    return {
        "skeleton": base64.b64encode(skeleton_bytes).decode(),
        "leaves": [lf.to_json() for lf in plan.leaves],
        "torch": torch.__version__,
    }


def _check_user_metadata(metadata):
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serializable (put other values in the state_dict): {exc}") from None
    return metadata


def _manifest_json(blobs, metadata: dict) -> str:
    return json.dumps({
        "tensors": [
            {"name": b.name, "file": b.file, "offset": b.offset, "length": b.nbytes,
             "dtype": b.dtype, "shape": b.shape, "crc32c": b.crc32c}
            for b in blobs
        ],
        "metadata": metadata,
    }, separators=(",", ":"))


def _write_shard(n, pending: str, file: str, blobs, writers: list):
    """Write blobs into one new shard file (one Go call: every region at
    once, straight from tensor memory) and record where each went."""
    w = _store.call(n.CheckpointOpenShard, pending, file, path=pending)
    writers.append(w)
    regions = _store.table(v for b in blobs for v in (_store.tensor_addr(b.tensor, b.nbytes), b.nbytes))
    out = _store.table([0] * (3 * len(blobs)))
    try:
        _store.call(w.WriteRegions, _store.addr(regions), len(blobs), _store.addr(out), path=pending)
    finally:
        err = None
        try:
            _store.call(w.Close, path=pending)
        except BaseException as exc:  # noqa: BLE001 - the write's own error wins
            err = exc
    if err is not None:
        raise err
    for i, b in enumerate(blobs):
        b.file, b.offset, b.crc32c = file, out[3 * i], out[3 * i + 2] & 0xFFFFFFFF


def _write_and_publish(c, path, skeleton_bytes, plan, user_md, concurrency, progress, keep_last, update_latest,
                       overwrite=False):
    """Begin (pending dir + lease), write the shards in parallel, commit
    (manifest last, one rename, latest, retention), all in Go."""
    job, name = _store.split_path(path)
    n = _store.native(c)
    sv = _store.call(n.CheckpointBegin, job, name, bool(overwrite), path=posixpath.join(job, name))
    try:
        pending = sv.Pending()
        groups = _store.balance(plan.blobs, concurrency)
        writers: list = []
        errors: list = []

        def run(i, group):
            try:
                _write_shard(n, pending, f"rank-0-{i}.bin", group, writers)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i, g), name=f"emberfs-ckpt-w{i}") for i, g in enumerate(groups)]
        for t in threads:
            t.start()
        # Poll the writers' acknowledged bytes for progress while Go works.
        while True:
            alive = [t for t in threads if t.is_alive()]
            progress.set(sum(w.Acked() for w in list(writers)))
            if not alive:
                break
            alive[0].join(0.05)
        if errors:
            raise errors[0]
        progress.set(progress.total)
        md = {"user": user_md, "python": _python_metadata(skeleton_bytes, plan)}
        return _store.call(sv.Commit, _manifest_json(plan.blobs, md), keep_last or 0, bool(overwrite),
                           bool(update_latest), path=posixpath.join(job, name))
    except BaseException:
        try:
            _store.call(sv.Abort)
        except (OSError, _store.EmberFSError):
            pass  # reclaim() removes what is left
        raise


def _prepare(state_dict, snapshot: bool, metadata, keep_last, concurrency):
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict, not {type(state_dict).__name__}")
    if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
        raise ValueError(f"keep_last must be a positive int, not {keep_last!r}")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive int, not {concurrency!r}")
    user_md = _check_user_metadata(metadata)
    skeleton, leaves = _tree.split(state_dict)
    plan = _plan.make_plan(leaves, snapshot=snapshot)
    return _tree.dump_skeleton(skeleton), plan, user_md


def save(state_dict, path, *, client=None, fs=None, concurrency: int = DEFAULT_CONCURRENCY,
         metadata: dict | None = None, keep_last: int | None = None, update_latest: bool = True,
         progress=None, overwrite: bool = False) -> str:
    """Save state_dict as a checkpoint at path ('/job/step-100'); returns the path.

    Tensors (any dtype/shape/device; views and shared storages written once)
    go to shard files written by `concurrency` threads; everything else in
    the (nested) dict is pickled into the manifest. The checkpoint appears
    all at once when complete; FileExistsError if path exists (unless
    overwrite=True, which swaps the new checkpoint in). Afterwards the
    job directory's `latest` points at it and, with keep_last=K, only the
    newest K checkpoints of the job are kept. progress(done, total) is called
    as bytes are written.
    """
    c = _client(client, fs)
    skel, plan, user_md = _prepare(state_dict, False, metadata, keep_last, concurrency)
    return _write_and_publish(c, path, skel, plan, user_md, concurrency, Progress(plan.nbytes, progress),
                              keep_last, update_latest, overwrite)


class SaveFuture(concurrent.futures.Future):
    """The result of async_save: result() returns the path or raises the
    save's error; bytes_done/bytes_total report progress."""

    def __init__(self, path, progress: Progress):
        super().__init__()
        self.path = path
        self._progress = progress

    @property
    def bytes_done(self) -> int:
        return self._progress.done

    @property
    def bytes_total(self) -> int:
        return self._progress.total


def async_save(state_dict, path, *, client=None, fs=None, concurrency: int = DEFAULT_CONCURRENCY,
               metadata: dict | None = None, keep_last: int | None = None, update_latest: bool = True,
               progress=None) -> SaveFuture:
    """Snapshot state_dict's tensors to host memory now, write them in the
    background; returns a SaveFuture. Training may change the tensors as soon
    as this returns: the checkpoint holds the values at the call."""
    c = _client(client, fs)
    skel, plan, user_md = _prepare(state_dict, True, metadata, keep_last, concurrency)
    prog = Progress(plan.nbytes, progress)
    fut = SaveFuture(path, prog)

    def run():
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(_write_and_publish(c, path, skel, plan, user_md, concurrency, prog, keep_last, update_latest))
        except BaseException as exc:  # delivered through result()
            fut.set_exception(exc)

    threading.Thread(target=run, name=f"emberfs-async-save-{path}", daemon=False).start()
    return fut


# -- load ------------------------------------------------------------------

def _leaves_of(manifest):
    py = manifest.get("metadata", {}).get("python")
    if py is not None:
        return [_plan.Leaf(lf["name"], tuple(lf["path"]), lf["blob"], lf.get("view")) for lf in py["leaves"]], py
    # A checkpoint written by another client (e.g. Go): a flat dict of tensors.
    return [_plan.Leaf(e["name"], (e["name"],), e["name"]) for e in manifest["tensors"]], None


def _select(leaves, keys):
    if keys is None:
        return leaves
    if isinstance(keys, str):
        keys = [keys]
    out, seen = [], set()
    for k in keys:
        hit = [lf for lf in leaves if lf.name == k or lf.name.startswith(k + "/")]
        if not hit:
            raise KeyError(f"checkpoint has no tensor {k!r}")
        for lf in hit:
            if lf.name not in seen:
                seen.add(lf.name)
                out.append(lf)
    return out


def _describe(dtype, shape):
    return f"dtype {dtype} shape {list(shape)}"


def load(path, into=None, keys=None, *, client=None, fs=None, concurrency: int = DEFAULT_CONCURRENCY,
         verify: bool = True, weights_only: bool = True, progress=None):
    """Load the checkpoint at path.

    Returns the saved state_dict (nested structure and non-tensor values
    included). into=state_dict fills its existing tensors in place (bytes are
    read straight into their storage when they are contiguous CPU tensors)
    and returns it; a tensor of the wrong dtype or shape raises ValueError
    naming the key. keys=[...] loads only those tensors (a name or a
    '/'-separated prefix) and returns {name: tensor} (or fills into=).
    Every tensor's CRC32C is checked unless verify=False. weights_only=True
    unpickles non-tensor values with torch's safe loader.
    """
    import torch

    c = _client(client, fs)
    job, name = _store.split_path(path)
    p = posixpath.join(job, name)
    reader = _store.call(_store.native(c).CheckpointOpen, p, path=p)
    try:
        manifest = json.loads(reader.ManifestJSON())
        entries = {e["name"]: e for e in manifest["tensors"]}
        leaves, py = _leaves_of(manifest)
        chosen = _select(leaves, keys)
        by_blob: dict = {}
        for lf in chosen:
            by_blob.setdefault(lf.blob, []).append(lf)

        # Find each leaf's target in into= and check it before reading anything.
        targets = {}
        if into is not None:
            for lf in chosen:
                t = _tree.lookup(into, lf.path)
                if not isinstance(t, torch.Tensor):
                    raise TypeError(f"into[{lf.name!r}] is a {type(t).__name__}, not a tensor")
                e = entries[lf.blob]
                want_dt, want_shape = (lf.view["dtype"], lf.view["shape"]) if lf.view else (e.get("dtype"), e.get("shape", []))
                if _plan.dtype_name(t.dtype) != want_dt or list(t.shape) != list(want_shape):
                    raise ValueError(
                        f"tensor {lf.name!r}: checkpoint has {_describe(want_dt, want_shape)}, "
                        f"into= has {_describe(_plan.dtype_name(t.dtype), t.shape)}"
                    )
                targets[lf.name] = t

        reads, blob_tensors = [], {}
        for blob, lfs in by_blob.items():
            try:
                e = entries[blob]
            except KeyError:
                raise CheckpointError(f"manifest of {p} lists no data for {blob!r}") from None
            dest = None
            first = targets.get(lfs[0].name)
            if first is not None and lfs[0].view is None and first.device.type == "cpu" and first.is_contiguous():
                dest = first.detach()  # read straight into the caller's tensor
            if dest is None:
                dest = torch.empty(e.get("shape", []), dtype=_plan.dtype_of(e.get("dtype", "uint8")))
            if dest.numel() * dest.element_size() != e["length"]:
                raise CheckpointError(f"manifest of {p}: tensor {blob!r} length {e['length']} does not match "
                                      f"{_describe(e.get('dtype'), e.get('shape', []))}")
            reads.append((e, dest))
            blob_tensors[blob] = dest
        # One Go call reads everything: chunk-planned parallel reads straight
        # into the tensors, each tensor's CRC32C checked as it completes.
        total = sum(e["length"] for e, _ in reads)
        if verify:
            tbl = _store.table(v for e, t in reads for v in (_store.tensor_addr(t, e["length"]), e["length"]))
            _store.call(reader.ReadTensors, json.dumps([e["name"] for e, _ in reads]), _store.addr(tbl), path=p,
                        reading=True)
        else:
            tbl = _store.table(v for e, t in reads for v in (e["offset"], _store.tensor_addr(t, e["length"]), e["length"]))
            _store.call(reader.ReadRanges, json.dumps([e["file"] for e, _ in reads]), _store.addr(tbl), path=p,
                        reading=True)
        Progress(total, progress).set(total)
    finally:
        _store.call(reader.Close, path=p)

    values = {}
    for lf in chosen:
        bt = blob_tensors[lf.blob]
        values[lf.name] = _plan.view_of_blob(bt, lf.view) if lf.view else bt

    if into is not None:
        with torch.no_grad():
            for lf in chosen:
                t, v = targets[lf.name], values[lf.name]
                if t.data_ptr() != v.data_ptr() or t.stride() != v.stride():
                    t.copy_(v)
        return into
    if keys is not None or py is None:
        return values
    skeleton = _tree.load_skeleton(base64.b64decode(py["skeleton"]), weights_only)
    return _tree.rebuild(skeleton, {lf.path: values[lf.name] for lf in chosen})


# -- lifecycle ---------------------------------------------------------------

@dataclass
class CheckpointInfo:
    path: str
    name: str
    created_unix_ns: int
    nbytes: int
    num_tensors: int
    metadata: dict = field(default_factory=dict)
    tensors: list = field(default_factory=list)
    files: dict = field(default_factory=dict)  # inspect(): data file -> size


def _info(m, path, with_tensors: bool) -> CheckpointInfo:
    tensors = m.get("tensors") or []
    md = m.get("metadata") or {}
    files = {f: v["size"] for f, v in (m.get("files") or {}).items()}
    return CheckpointInfo(
        path=path, name=posixpath.basename(path), created_unix_ns=m.get("created_unix_ns", 0),
        nbytes=sum(e["length"] for e in tensors) if tensors else sum(files.values()), num_tensors=len(tensors),
        metadata=md.get("user", {}) if isinstance(md, dict) else {},
        tensors=[{"name": e["name"], "dtype": e.get("dtype"), "shape": e.get("shape", []), "length": e["length"],
                  "file": e["file"], "offset": e["offset"], "crc32c": e["crc32c"]} for e in tensors]
        if with_tensors else [],
        files=files if with_tensors else {},
    )


def inspect(path, *, client=None, fs=None) -> CheckpointInfo:
    """Manifest summary of one checkpoint: tensors, sizes, dtypes, metadata
    (a DCP checkpoint has no tensor entries; its files are listed)."""
    c = _client(client, fs)
    job, name = _store.split_path(path)
    p = posixpath.join(job, name)
    return _info(json.loads(_store.call(_store.native(c).CheckpointInspect, p, path=p)), p, True)


def list_checkpoints(job_dir, *, client=None, fs=None) -> list[CheckpointInfo]:
    """Published checkpoints in job_dir, oldest first (pending saves excluded)."""
    c = _client(client, fs)
    job = _store.job_dir(job_dir)
    out = []
    for x in json.loads(_store.call(_store.native(c).CheckpointList, job, path=job)):
        md = x.get("metadata") or {}
        out.append(CheckpointInfo(path=x["path"], name=x["name"], created_unix_ns=x["created_unix_ns"],
                                  nbytes=x["bytes"], num_tensors=x["tensors"],
                                  metadata=md.get("user", {}) if isinstance(md, dict) else {}))
    return out


def latest(job_dir, *, client=None, fs=None) -> str | None:
    """Path of the job's latest published checkpoint (the `latest` pointer,
    or the newest one when the pointer is missing or stale), or None."""
    c = _client(client, fs)
    job = _store.job_dir(job_dir)
    try:
        return _store.call(_store.native(c).CheckpointLatest, job, path=job)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


def remove(path, *, client=None, fs=None) -> None:
    """Remove a published checkpoint. It is first renamed out of sight, so a
    reader sees it whole or not at all; latest moves to the newest left."""
    c = _client(client, fs)
    job, name = _store.split_path(path)
    p = posixpath.join(job, name)
    _store.call(_store.native(c).CheckpointRemove, p, path=p)


def reclaim(job_dir, *, older_than: float = 3600.0, client=None, fs=None) -> list[str]:
    """Remove pending directories of saves that died: those whose lease was
    not renewed for older_than seconds (0: every pending directory); returns
    the paths removed."""
    c = _client(client, fs)
    job = _store.job_dir(job_dir)
    if older_than < 0:
        raise ValueError(f"older_than must be >= 0, not {older_than!r}")
    seen = json.loads(_store.call(_store.native(c).CheckpointReclaim, job, float(older_than), path=job))
    return [x["path"] for x in seen if x["reclaimed"]]


__all__ = ["CheckpointError", "CheckpointInfo", "SaveFuture", "async_save", "inspect", "latest",
           "list_checkpoints", "load", "reclaim", "remove", "save"]
