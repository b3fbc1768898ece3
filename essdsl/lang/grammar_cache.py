"""The on-disk cache of the parser's LALR tables, holding data only.

Building the tables takes ~0.1 s, so they are kept in ``$ESSDSL_CACHE`` or
``$XDG_CACHE_HOME/essdsl`` (``~/.cache/essdsl``).  Lark's own ``cache=`` option
stores a pickle and unpickles it *before* it compares the grammar's hash, so
anyone who could write that folder ran code in every ``essdsl check``.  This
cache instead:

* stores the tables as JSON (tuples and non-string keys tagged), which cannot
  carry code: loading builds only Lark's own parser classes from plain data;
* reads a file only if it names the same grammar, Lark and Python versions as
  the running code (the file name and a field inside must both match);
* trusts a folder and a file only when the current user owns them and nobody
  else may write them, so a cache in a shared folder such as ``/tmp`` (or one
  another user created there) is never read or written;
* writes through a private temporary file and one rename.

Any problem (unreadable, corrupt, untrusted) means the tables are built again,
which only costs that 0.1 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any, Optional

import lark
from lark import Lark
from lark.grammar import Rule
from lark.lexer import TerminalDef

FORMAT = "essdsl-lalr-tables-1"


def cache_key(grammar: str) -> str:
    """What a cache file must have been built from: the grammar, Lark's and Python's versions."""
    key = f"{grammar}\0{lark.__version__}\0{sys.version_info[:2]}\0{FORMAT}".encode("utf-8")
    return hashlib.sha256(key).hexdigest()


def cache_folder() -> Optional[Path]:
    """``$ESSDSL_CACHE`` or ``$XDG_CACHE_HOME/essdsl`` (``~/.cache/essdsl``), or None when
    no home folder is known."""
    if os.environ.get("ESSDSL_CACHE"):
        return Path(os.environ["ESSDSL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME")
    try:
        return Path(base) / "essdsl" if base else Path.home() / ".cache" / "essdsl"
    except RuntimeError:  # no home folder
        return None


def private(path: Path) -> bool:
    """True when ``path`` (not followed if a link) belongs to the current user and no
    one else may write it; a link, a shared folder (``/tmp`` is world-writable) or a
    file another user made is not private."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(info.st_mode):
        return False
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return False
    return not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _encode(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and "__tuple__" not in value and "__items__" not in value:
            return {k: _encode(v) for k, v in value.items()}
        return {"__items__": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in the grammar cache")


def _decode_object(obj: dict) -> Any:
    if "__tuple__" in obj and len(obj) == 1:
        return tuple(obj["__tuple__"])
    if "__items__" in obj and len(obj) == 1:
        return {k: v for k, v in obj["__items__"]}
    return obj


def tables_to_text(parser: Lark, key: str) -> str:
    data, memo = parser.memo_serialize([TerminalDef, Rule])
    return json.dumps({"format": FORMAT, "key": key, "data": _encode(data), "memo": _encode(memo)}, separators=(",", ":"))


def tables_from_text(text: str, key: str) -> Optional[Lark]:
    """The parser stored in ``text``, or None unless it is this format and ``key``."""
    stored = json.loads(text, object_hook=_decode_object)
    if not isinstance(stored, dict) or stored.get("format") != FORMAT or stored.get("key") != key:
        return None
    return Lark.__new__(Lark)._load({"data": stored["data"], "memo": stored["memo"]})


def load_parser(grammar: str, **options) -> Lark:
    """The LALR parser for ``grammar``: from a trusted cache file when one matches,
    else built (and then cached when the folder is private)."""
    key = cache_key(grammar)
    folder = cache_folder()
    path = folder / f"space-grammar-{key[:24]}.json" if folder is not None else None
    if path is not None and private(folder) and private(path):
        try:
            parser = tables_from_text(path.read_text(encoding="utf-8"), key)
            if parser is not None:
                return parser
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, lark.exceptions.LarkError):
            pass  # corrupt or foreign: rebuild below and overwrite it
    parser = Lark(grammar, **options)
    if path is not None:
        _store(parser, folder, path, key)
    return parser


def _store(parser: Lark, folder: Path, path: Path, key: str) -> None:
    """Write the tables to ``path`` if ``folder`` is (or can be made) private; never fails."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not private(folder):
            return
        text = tables_to_text(parser, key)
        tmp = folder / f".{path.name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    except (OSError, TypeError, ValueError):
        pass
