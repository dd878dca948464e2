"""Every command's inputs, checked before anything is loaded.

A missing folder, a model that is neither a folder, an embedded name nor a reachable hub id, a table of the wrong
format, a malformed URL or port: each fails in a second as :class:`InputError`, one line naming the flag and the
value (``itool`` prints it and exits 2, no traceback) — not minutes later as a chain of tracebacks from deep inside
transformers or pyarrow.  Checks read only what they must: a Parquet footer, a folder listing, the local Hugging
Face cache (the hub itself only when the cache lacks the model and the hub is not switched off).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from ..artifacts import SchemaMismatch, check_table_file
from ..schemas import TableSchema

__all__ = ["InputError", "model", "local_model", "adapter", "folder", "table", "url", "port"]

_HUB_TIMEOUT_S = 10.0


class InputError(ValueError):
    """A command-line value that cannot work; its message names the flag and the value."""


def _embedded() -> tuple[str, ...]:
    from ..registry import EMBEDDED_MODELS

    return tuple(sorted(EMBEDDED_MODELS))


def _hub_problem(repo_id: str) -> str | None:
    """None where transformers can load ``repo_id`` (cached, or the hub answers); else why not."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return None
    offline = constants.HF_HUB_OFFLINE or os.environ.get("TRANSFORMERS_OFFLINE", "").upper() in ("1", "ON", "YES")
    if offline:
        return "a hub id that is not in the local Hugging Face cache, and the hub is switched off (HF_HUB_OFFLINE)"
    try:
        HfApi().model_info(repo_id, timeout=_HUB_TIMEOUT_S)
    except Exception as e:  # any failure to reach or find it is the same answer for the user
        return f"a hub id that is not in the local cache, and the hub did not provide it ({type(e).__name__})"
    return None


def model(flag: str, value: str) -> str:
    """A model: an existing folder with ``config.json``, an embedded name, or a loadable hub id ``org/name``."""
    from ..config import _HUB_ID  # the one definition of a hub id's shape

    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{flag} {value!r}: is a file; a model is a folder (config.json + weights)")
        if not (path / "config.json").is_file():
            raise InputError(f"{flag} {value!r}: folder without config.json, not a Hugging Face model folder")
        return value
    if value in _embedded():
        return value
    if value.startswith(("/", ".", "~")) or not _HUB_ID.fullmatch(value):
        raise InputError(
            f"{flag} {value!r}: no such folder, and neither an embedded model ({', '.join(_embedded())}) "
            "nor a hub id (org/name)"
        )
    why = _hub_problem(value)
    if why:
        raise InputError(f"{flag} {value!r}: {why}")
    return value


def local_model(flag: str, value: str) -> str:
    """A model on this machine: an embedded name or a folder with ``config.json`` (no hub: a server is started
    on it)."""
    if value in _embedded():
        return value
    path = Path(value).expanduser()
    if not path.is_dir():
        raise InputError(
            f"{flag} {value!r}: "
            + ("is a file" if path.exists() else "no such folder")
            + f"; expected a model folder or an embedded model ({', '.join(_embedded())})"
        )
    return model(flag, value)


def adapter(flag: str, value: str | None) -> str | None:
    """A LoRA adapter folder (``adapter_config.json``), or None."""
    if value is None:
        return None
    folder(flag, value)
    if not (Path(value).expanduser() / "adapter_config.json").is_file():
        raise InputError(f"{flag} {value!r}: folder without adapter_config.json, not a LoRA adapter")
    return value


def folder(flag: str, value: str | None) -> str | None:
    """An existing folder, or None."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.exists():
        raise InputError(f"{flag} {value!r}: no such folder")
    if not path.is_dir():
        raise InputError(f"{flag} {value!r}: is a file, expected a folder")
    return value


def table(flag: str, value: str, schema: TableSchema) -> str:
    """A Parquet file of ``schema`` (its footer read, no rows)."""
    try:
        check_table_file(value, schema)
    except (FileNotFoundError, SchemaMismatch) as e:
        raise InputError(f"{flag} {value!r}: {str(e).removeprefix(f'{value}: ')}") from None
    return value


def url(flag: str, value: str | None) -> str | None:
    """An ``http(s)://host[:port]`` base URL, or None."""
    if value is None:
        return None
    try:
        u = urlparse(value)
        u.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as e:
        raise InputError(f"{flag} {value!r}: not a URL ({e})") from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise InputError(f"{flag} {value!r}: expected http://HOST[:PORT] or https://HOST[:PORT]")
    return value


def port(flag: str, value: int | None) -> int | None:
    """A TCP port 1–65535, or None (a free one)."""
    if value is not None and not 0 < value < 65536:
        raise InputError(f"{flag} {value}: not a TCP port (1–65535)")
    return value
