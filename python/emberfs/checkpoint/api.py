"""emberfs.checkpoint: save/load state_dicts as sharded, atomically published
checkpoints; async save; latest pointer, retention, list/inspect/remove."""

from __future__ import annotations

import base64
import concurrent.futures
import posixpath
import threading
import uuid
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
    import json

    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serializable (put other values in the state_dict): {exc}") from None
    return metadata


def _write_and_publish(c, path, skeleton_bytes, plan, user_md, concurrency, progress, keep_last, update_latest,
                       overwrite=False):
    pending = _store.PendingSave(c, path, replace=overwrite)
    try:
        pending.write_shards(0, plan.blobs, concurrency, progress)
        manifest = _store.new_manifest(pending.name, plan.blobs, plan.leaves, {
            "user": user_md, "python": _python_metadata(skeleton_bytes, plan),
        })
        pending.commit(manifest, replace=overwrite)
    except BaseException:
        pending.abort()
        raise
    if update_latest:
        _set_latest(c, pending.job, pending.name)
    if keep_last is not None:
        _retain(c, pending.job, keep_last, keep=pending.name)
    return pending.path


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
    reader = _store.Reader(c, path)
    try:
        leaves, py = _leaves_of(reader.manifest)
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
                e = reader.entries[lf.blob]
                want_dt, want_shape = (lf.view["dtype"], lf.view["shape"]) if lf.view else (e["dtype"], e["shape"])
                if _plan.dtype_name(t.dtype) != want_dt or list(t.shape) != list(want_shape):
                    raise ValueError(
                        f"tensor {lf.name!r}: checkpoint has {_describe(want_dt, want_shape)}, "
                        f"into= has {_describe(_plan.dtype_name(t.dtype), t.shape)}"
                    )
                targets[lf.name] = t

        reads, blob_tensors = [], {}
        for blob, lfs in by_blob.items():
            try:
                e = reader.entries[blob]
            except KeyError:
                raise CheckpointError(f"manifest of {reader.path} lists no data for {blob!r}") from None
            dest = None
            first = targets.get(lfs[0].name)
            if first is not None and lfs[0].view is None and first.device.type == "cpu" and first.is_contiguous():
                dest = first.detach()  # read straight into the caller's tensor
            if dest is None:
                dest = torch.empty(e["shape"], dtype=_plan.dtype_of(e["dtype"]))
            if dest.numel() * dest.element_size() != e["length"]:
                raise CheckpointError(f"manifest of {reader.path}: tensor {blob!r} length {e['length']} does not match {_describe(e['dtype'], e['shape'])}")
            reads.append((e, dest))
            blob_tensors[blob] = dest
        reader.read(reads, concurrency, verify=verify, progress=Progress(sum(e["length"] for e, _ in reads), progress))
    finally:
        reader.close()

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


def _info(path, m, with_tensors: bool) -> CheckpointInfo:
    job, name = _store.split_path(path)
    tensors = m["tensors"]
    return CheckpointInfo(
        path=posixpath.join(job, name), name=name, created_unix_ns=m.get("created_unix_ns", 0),
        nbytes=sum(e["length"] for e in tensors), num_tensors=len(tensors),
        metadata=m.get("metadata", {}).get("user", {}),
        tensors=[{k: e[k] for k in ("name", "dtype", "shape", "length", "file", "offset", "crc32c")} for e in tensors]
        if with_tensors else [],
    )


def inspect(path, *, client=None, fs=None) -> CheckpointInfo:
    """Manifest summary of one checkpoint: tensors, sizes, dtypes, metadata."""
    c = _client(client, fs)
    return _info(path, _store.read_manifest(c, path), True)


def list_checkpoints(job_dir, *, client=None, fs=None) -> list[CheckpointInfo]:
    """Published checkpoints in job_dir, oldest first (pending saves excluded)."""
    from ..client import _abs

    c = _client(client, fs)
    job = _abs(_store.strip_scheme(job_dir))
    out = []
    for name in c.listdir(job):
        if name.startswith(".") or name == _store.LATEST:
            continue
        p = posixpath.join(job, name)
        try:
            m = _store.read_manifest(c, p)
        except (OSError, CheckpointError):
            continue  # not a checkpoint (or removed meanwhile)
        out.append(_info(p, m, False))
    out.sort(key=lambda i: (i.created_unix_ns, i.name))
    return out


def _set_latest(c, job, name):
    tmp = posixpath.join(job, f".latest-{uuid.uuid4().hex}")
    with c.open(tmp, "xb", buffering=0) as f:
        f.write((name + "\n").encode())
        f.fsync()
    try:
        c.rename(tmp, posixpath.join(job, _store.LATEST))
    except BaseException:
        c.remove(tmp)
        raise


def latest(job_dir, *, client=None, fs=None) -> str | None:
    """Path of the job's latest published checkpoint, or None if it has none."""
    from ..client import _abs

    c = _client(client, fs)
    job = _abs(_store.strip_scheme(job_dir))
    try:
        with c.open(posixpath.join(job, _store.LATEST), "rb") as f:
            name = f.read().decode().strip()
        p = posixpath.join(job, name)
        if name and c.exists(posixpath.join(p, _store.MANIFEST)):
            return p
    except FileNotFoundError:
        pass
    # No pointer, or it names a removed checkpoint: the newest one left.
    cps = list_checkpoints(job, client=c)
    return cps[-1].path if cps else None


def remove(path, *, client=None, fs=None) -> None:
    """Remove a published checkpoint. It is first renamed out of sight, so a
    reader sees it whole or not at all; latest moves to the newest left."""
    c = _client(client, fs)
    job, name = _store.split_path(path)
    _store.read_manifest(c, path)  # refuse anything that is not a checkpoint
    doomed = posixpath.join(job, f"{_store.PENDING_PREFIX}{name}-removing-{uuid.uuid4().hex}")
    c.rename(posixpath.join(job, name), doomed)
    c.rmtree(doomed)
    lp = posixpath.join(job, _store.LATEST)
    try:
        with c.open(lp, "rb") as f:
            current = f.read().decode().strip()
    except FileNotFoundError:
        return
    if current == name:
        cps = list_checkpoints(job, client=c)
        if cps:
            _set_latest(c, job, cps[-1].name)
        else:
            c.remove(lp)


def _retain(c, job, keep_last: int, keep: str):
    cps = list_checkpoints(job, client=c)
    extra = len(cps) - keep_last
    for info in cps:
        if extra <= 0:
            break
        if info.name == keep:
            continue
        try:
            remove(info.path, client=c)
        except (FileNotFoundError, CheckpointError):
            pass  # another process removed it first
        extra -= 1


def reclaim(job_dir, *, older_than: float = 3600.0, client=None, fs=None) -> list[str]:
    """Remove pending directories of saves that died, untouched for older_than
    seconds; returns the paths removed."""
    import time

    from ..client import _abs

    c = _client(client, fs)
    job = _abs(_store.strip_scheme(job_dir))
    now = time.time()
    removed = []
    for name in c.listdir(job):
        if not name.startswith(_store.PENDING_PREFIX):
            continue
        p = posixpath.join(job, name)
        try:
            newest = max([c.stat(p).st_mtime] + [e.stat().st_mtime for e in c.scandir(p)])
            if now - newest < older_than:
                continue
            c.rmtree(p)
            removed.append(p)
        except FileNotFoundError:
            continue
    return removed


__all__ = ["CheckpointError", "CheckpointInfo", "SaveFuture", "async_save", "inspect", "latest",
           "list_checkpoints", "load", "reclaim", "remove", "save"]
