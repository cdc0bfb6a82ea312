"""Split a state_dict into its tensors and a tensor-free skeleton, and back.

A state_dict may nest dicts, lists and tuples and hold non-tensor values
(step counters, hyper-parameters, optimizer param_groups). Every tensor is
found with its path of keys/indices from the root; the skeleton is the same
structure with each tensor replaced by None, pickled into the manifest, and
the tensors are written as data. Paths go into the manifest as JSON lists,
so keys must be str or int (JSON keeps the two apart).
"""

from __future__ import annotations

import collections
import io

_CONTAINERS = (dict, collections.OrderedDict, list, tuple)


def path_name(path) -> str:
    """The tensor's name in the manifest: its path joined with '/'."""
    return "/".join(str(p) for p in path)


def split(obj):
    """Return (skeleton, [(path, tensor)]) for obj, depth first in key order."""
    import torch

    leaves = []

    def walk(node, path):
        if isinstance(node, torch.Tensor):
            leaves.append((path, node))
            return None
        t = type(node)
        if t in (dict, collections.OrderedDict):
            out = t()
            for k, v in node.items():
                if isinstance(v, torch.Tensor) or type(v) in _CONTAINERS:
                    if not isinstance(k, (str, int)):
                        raise TypeError(
                            f"state_dict key {k!r} at {path_name(path) or '<root>'} is a "
                            f"{type(k).__name__}; keys on the way to a tensor must be str or int"
                        )
                out[k] = walk(v, path + (k,))
            return out
        if t in (list, tuple):
            return t(walk(v, path + (i,)) for i, v in enumerate(node))
        return node

    skeleton = walk(obj, ())
    names = {}
    for path, _ in leaves:
        name = path_name(path)
        if name in names:
            raise ValueError(
                f"two tensors would share the name {name!r} (paths {list(names[name])} and {list(path)}); "
                "rename one key"
            )
        names[name] = path
    return skeleton, leaves


def rebuild(skeleton, tensors: dict):
    """Put tensors (keyed by path tuple) back into a copy of skeleton."""

    def walk(node, path):
        if path in tensors:
            return tensors[path]
        t = type(node)
        if t in (dict, collections.OrderedDict):
            out = t()
            for k, v in node.items():
                out[k] = walk(v, path + (k,))
            return out
        if t in (list, tuple):
            return t(walk(v, path + (i,)) for i, v in enumerate(node))
        return node

    return walk(skeleton, ())


def lookup(obj, path):
    """The value at path inside obj, or raise KeyError naming the path."""
    node = obj
    for i, p in enumerate(path):
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            raise KeyError(f"into= has no entry {path_name(path)!r} (missing at {path_name(path[: i + 1])!r})") from None
    return node


def dump_skeleton(skeleton) -> bytes:
    """Pickle the skeleton the way torch.save does, so load can use torch's
    weights_only unpickler (no arbitrary code from a checkpoint by default)."""
    import torch

    buf = io.BytesIO()
    torch.save(skeleton, buf)
    return buf.getvalue()


def load_skeleton(data: bytes, weights_only: bool):
    import torch

    return torch.load(io.BytesIO(data), weights_only=weights_only)
