"""Where a client finds its cluster: arguments, environment, config file.

Each of the mgmtd address list and the token is taken from the first place
that has it, the same order the ``emberfs`` CLI uses (docs/cli.md):

1. the arguments (``emberfs.connect(mgmtd, token)``, fsspec storage options,
   dataset arguments);
2. ``EMBERFS_MGMTD`` and ``EMBERFS_TOKEN``;
3. the client config file: ``config=`` / ``EMBERFS_CONFIG`` (must exist),
   else ``$XDG_CONFIG_HOME/emberfs/client.toml`` or
   ``~/.config/emberfs/client.toml`` (used when present). It is TOML::

       mgmtd = "10.0.0.1:7100,10.0.0.2:7100"   # or ["10.0.0.1:7100", ...]
       token = "..."

   Unknown keys are errors, so a misspelt key does not silently fall back.

Nothing here touches the Go runtime, so it is safe in a process that forks.
"""

from __future__ import annotations

import os
import tomllib
from typing import Sequence

from ._errors import EmberFSError


class ConfigError(EmberFSError, ValueError):
    """The cluster address or token is missing or the config file is bad."""


def default_config_path() -> str | None:
    """The config file read when neither config= nor EMBERFS_CONFIG names one."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg:
        return os.path.join(xdg, "emberfs", "client.toml")
    home = os.path.expanduser("~")
    if home and home != "~":
        return os.path.join(home, ".config", "emberfs", "client.toml")
    return None


def _split(addrs: str | Sequence[str] | None, where: str) -> list[str]:
    if addrs is None:
        return []
    if isinstance(addrs, str):
        addrs = [addrs]
    elif not isinstance(addrs, (list, tuple)):
        raise ConfigError(f"{where}: mgmtd must be a string or a list of strings, not {type(addrs).__name__}")
    out = []
    for a in addrs:
        if not isinstance(a, str):
            raise ConfigError(f"{where}: mgmtd holds {a!r}, not an address string")
        out += [p.strip() for p in a.split(",") if p.strip()]
    return out


def load_config(path: str) -> tuple[list[str], str]:
    """Read a client config file: (mgmtd addresses, token); either may be empty."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    unknown = sorted(set(data) - {"mgmtd", "token"})
    if unknown:
        raise ConfigError(f"config {path}: unknown key(s) {', '.join(unknown)} (known: mgmtd, token)")
    token = data.get("token", "")
    if not isinstance(token, str):
        raise ConfigError(f"config {path}: token must be a string, not {type(token).__name__}")
    return _split(data.get("mgmtd"), f"config {path}"), token


def resolve(mgmtd: str | Sequence[str] | None = None, token: str | None = None,
            config: str | os.PathLike | None = None) -> tuple[str, str]:
    """Return (comma-separated mgmtd addresses, token) for a client.

    Raises ConfigError naming every place looked at when either is missing,
    and FileNotFoundError when an explicitly named config file is absent.
    """
    addrs = _split(mgmtd, "mgmtd argument")
    tok = token or ""
    if not addrs:
        addrs = _split(os.environ.get("EMBERFS_MGMTD"), "EMBERFS_MGMTD")
    if not tok:
        tok = os.environ.get("EMBERFS_TOKEN", "")
    if not (addrs and tok):
        path = os.fspath(config) if config is not None else os.environ.get("EMBERFS_CONFIG") or None
        explicit = path is not None
        if path is None:
            path = default_config_path()
        if path is not None and (explicit or os.path.exists(path)):
            faddrs, ftok = load_config(path)  # FileNotFoundError when explicit and absent
            addrs = addrs or faddrs
            tok = tok or ftok
    if not addrs:
        raise ConfigError("no cluster address: pass mgmtd='host:port', set EMBERFS_MGMTD, "
                          "or put mgmtd = \"host:port\" in the config file (~/.config/emberfs/client.toml)")
    if not tok:
        raise ConfigError("no cluster token: pass token=..., set EMBERFS_TOKEN, "
                          "or put token = \"...\" in the config file (~/.config/emberfs/client.toml)")
    return ",".join(addrs), tok
