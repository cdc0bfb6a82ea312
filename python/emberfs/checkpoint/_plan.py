"""Decide which bytes to write for a set of tensors: one blob per storage.

A blob is one contiguous byte range written to a shard file. Usually a blob
is one tensor's bytes. Tensors that share storage are written once:
  * aliases (same storage, offset, shape, stride and dtype: tied weights)
    point at one blob and load back as one tensor object;
  * different views of one storage (a tensor and its transpose or a slice)
    share a blob holding the storage span they cover, and each records how to
    view it (dtype, shape, stride, byte offset).
A non-contiguous tensor that shares nothing is made contiguous for writing
only; it loads back contiguous with the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._tree import path_name

DTYPE_NAMES = {}  # torch.dtype -> manifest name ("float32", "bfloat16", ...)
NAME_DTYPES = {}


def _init_dtypes():
    import torch

    if DTYPE_NAMES:
        return
    for name in dir(torch):
        dt = getattr(torch, name)
        if isinstance(dt, torch.dtype) and dt not in DTYPE_NAMES:
            canon = str(dt).removeprefix("torch.")
            DTYPE_NAMES[dt] = canon
            NAME_DTYPES[canon] = dt


def dtype_name(dt) -> str:
    _init_dtypes()
    return DTYPE_NAMES[dt]


def dtype_of(name: str):
    _init_dtypes()
    try:
        return NAME_DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} in checkpoint manifest") from None


@dataclass
class Blob:
    name: str
    tensor: object  # contiguous CPU tensor whose memory is written
    dtype: str
    shape: list
    nbytes: int
    # filled in by the writer
    file: str = ""
    offset: int = 0
    crc32c: int = 0


@dataclass
class Leaf:
    name: str
    path: tuple
    blob: str
    view: dict | None = None  # dtype, shape, stride, offset (bytes into the blob)

    def to_json(self):
        d = {"name": self.name, "path": list(self.path), "blob": self.blob}
        if self.view is not None:
            d["view"] = self.view
        return d


@dataclass
class Plan:
    blobs: list = field(default_factory=list)
    leaves: list = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.blobs)


def _check_tensor(name, t):
    import torch

    if t.is_sparse or t.layout != torch.strided:
        raise TypeError(f"tensor {name!r} has layout {t.layout}; only dense (strided) tensors can be checkpointed")
    if t.is_quantized:
        raise TypeError(f"tensor {name!r} is quantized; dequantize it before checkpointing")
    if t.device.type == "meta":
        raise TypeError(f"tensor {name!r} is on the meta device and has no data")


def _span(t):
    """Byte range [lo, hi) of t's storage that t covers."""
    es = t.element_size()
    lo = t.storage_offset() * es
    if t.numel() == 0:
        return lo, lo
    last = t.storage_offset() + sum((s - 1) * st for s, st in zip(t.shape, t.stride()))
    return lo, (last + 1) * es


def _as_bytes_of_storage(t, lo, hi):
    import torch

    out = torch.empty(0, dtype=torch.uint8, device=t.device)
    out.set_(t.untyped_storage(), lo, (hi - lo,), (1,))
    return out


def make_plan(leaves, snapshot: bool) -> Plan:
    """Blobs and leaves for [(path, tensor)]; snapshot copies every blob into
    fresh CPU memory (async save), otherwise CPU contiguous tensors are used
    in place."""
    import torch

    plan = Plan()
    groups: dict = {}
    order = []
    for path, t in leaves:
        name = path_name(path)
        _check_tensor(name, t)
        t = t.detach()
        key = (t.device, t.untyped_storage().data_ptr()) if t.untyped_storage().nbytes() else ("empty", name)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append((name, path, t))

    def add_blob(name, t):
        if t.device.type != "cpu":
            t = t.to("cpu")  # a fresh copy already
        elif snapshot:
            t = t.clone(memory_format=torch.contiguous_format)
        if not t.is_contiguous():
            t = t.contiguous()
        plan.blobs.append(Blob(name, t, dtype_name(t.dtype), list(t.shape), t.numel() * t.element_size()))

    for key in order:
        members = groups[key]
        first_name, first_path, first = members[0]
        sig = lambda t: (t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)  # noqa: E731
        if all(sig(t) == sig(first) for _, _, t in members):
            add_blob(first_name, first)
            for name, path, _ in members:
                plan.leaves.append(Leaf(name, path, first_name))
            continue
        # Several different views of one storage: write the span once.
        spans = [_span(t) for _, _, t in members]
        lo = min(s[0] for s in spans)
        hi = max(s[1] for s in spans)
        blob_name = f"storage:{first_name}"
        add_blob(blob_name, _as_bytes_of_storage(first, lo, hi))
        for (name, path, t), (tlo, _) in zip(members, spans):
            off = tlo - lo
            if off % t.element_size():
                raise ValueError(f"tensor {name!r} starts at a byte offset not aligned to its dtype within its storage")
            plan.leaves.append(Leaf(name, path, blob_name, {
                "dtype": dtype_name(t.dtype), "shape": list(t.shape), "stride": list(t.stride()), "offset": off,
            }))
    return plan


def view_of_blob(blob_tensor, view):
    """Rebuild a leaf from its blob (uint8, contiguous) and its view record."""
    import torch

    dt = dtype_of(view["dtype"])
    es = torch.empty(0, dtype=dt).element_size()
    out = torch.empty(0, dtype=dt)
    out.set_(blob_tensor.untyped_storage(), view["offset"] // es, view["shape"], view["stride"])
    return out
