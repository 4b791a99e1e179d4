"""Compact JSON for the stores' per-row serialization (coupling snapshots, transaction bodies, batch sizing).

``json.dumps`` with any keyword argument builds a new ``JSONEncoder`` and a new C encoder on every call; a
coupling costs ~8 such calls on a full sync. These encoders are built once, on ``json.dumps``'s own C
encoder, with the same output as ``json.dumps`` with the arguments named below (ASCII, NaN allowed, the
same ``TypeError`` for a value it cannot encode). No circular-reference check: the stores serialize plain
values. Without the C accelerator they are ``json.dumps`` itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

_refuse = json.JSONEncoder().default  # raises json.dumps's TypeError ("Object of type X is not JSON serializable")


def _encoder(default: Callable[[Any], Any] | None, item_separator: str, key_separator: str) -> Callable[[Any], str]:
    if c_make_encoder is None:  # pragma: no cover - CPython always has it
        return lambda value: json.dumps(value, separators=(item_separator, key_separator), default=default)
    encode = c_make_encoder(
        None, default or _refuse, encode_basestring_ascii, None, key_separator, item_separator, False, False, True
    )
    return lambda value: "".join(encode(value, 0))


compact = _encoder(None, ",", ":")  # json.dumps(value, separators=(",", ":"))
compact_str = _encoder(str, ",", ":")  # json.dumps(value, separators=(",", ":"), default=str)
spaced_str = _encoder(str, ", ", ": ")  # json.dumps(value, default=str)
