"""Just enough AMQP 1.0 message encoding for the peer: split an encoded message into its sections
(header, annotations, properties, ..., body) without decoding the body, and re-assemble it with a
fresh header and message annotations on delivery. Keeping the bare message as raw bytes avoids a
decode/encode round trip that would change types (int -> long, str keys -> symbols)."""

from __future__ import annotations

import struct
from typing import Any

from proton import Data, Described, symbol, ulong

HEADER = 0x70
DELIVERY_ANNOTATIONS = 0x71
MESSAGE_ANNOTATIONS = 0x72
PROPERTIES = 0x73
APPLICATION_PROPERTIES = 0x74
DATA = 0x75
AMQP_SEQUENCE = 0x76
AMQP_VALUE = 0x77
FOOTER = 0x78


class CodecError(ValueError):
    """The bytes are not a well-formed AMQP message."""


def _skip(buf: bytes, pos: int) -> int:
    """Position after the AMQP value that starts at ``pos`` (the width follows from the constructor)."""
    code = buf[pos]
    pos += 1
    if code == 0x00:  # described: descriptor, then value
        return _skip(buf, _skip(buf, pos))
    width = code >> 4
    if width == 0x4:
        return pos
    fixed = {0x5: 1, 0x6: 2, 0x7: 4, 0x8: 8, 0x9: 16}.get(width)
    if fixed is not None:
        return pos + fixed
    if width in (0xA, 0xC, 0xE):
        return pos + 1 + buf[pos]
    if width in (0xB, 0xD, 0xF):
        return pos + 4 + struct.unpack_from(">I", buf, pos)[0]
    raise CodecError(f"unknown AMQP constructor 0x{code:02x} at {pos - 1}")


def _descriptor(buf: bytes, pos: int) -> int:
    if buf[pos] != 0x00:
        raise CodecError("section is not a described type")
    code = buf[pos + 1]
    if code == 0x53:  # smallulong
        return buf[pos + 2]
    if code == 0x80:  # ulong
        return struct.unpack_from(">Q", buf, pos + 2)[0]
    raise CodecError("section descriptor is not a ulong")


def split_sections(buf: bytes) -> list[tuple[int, bytes]]:
    """[(descriptor code, raw bytes of the section)] in order."""
    sections: list[tuple[int, bytes]] = []
    pos = 0
    try:
        while pos < len(buf):
            end = _skip(buf, pos)
            if end > len(buf):
                raise CodecError("truncated section")
            sections.append((_descriptor(buf, pos), bytes(buf[pos:end])))
            pos = end
    except (IndexError, struct.error) as e:
        raise CodecError(f"truncated AMQP data: {e}") from e
    return sections


def plain(value: Any) -> Any:
    """Deep copy of a proton object: proton hands out memoryviews into buffers it frees later."""
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, Described):
        return Described(value.descriptor, plain(value.value))
    return value


def decode_value(raw: bytes) -> Any:
    data = Data()
    data.decode(raw)
    data.rewind()
    data.next()
    return plain(data.get_object())


def section_value(raw: bytes) -> Any:
    """The value inside a described section (annotations map, properties list, data binary...)."""
    obj = decode_value(raw)
    return obj.value if isinstance(obj, Described) else obj


def encode_described(code: int, value: Any) -> bytes:
    data = Data()
    data.put_object(Described(ulong(code), value))
    return bytes(data.encode())


def encode_header(delivery_count: int, *, first_acquirer: bool) -> bytes:
    data = Data()
    data.put_described()
    data.enter()
    data.put_ulong(HEADER)
    data.put_list()
    data.enter()
    data.put_bool(True)  # durable
    data.put_ubyte(4)  # priority (default)
    data.put_null()  # ttl
    data.put_bool(first_acquirer)
    data.put_uint(delivery_count)
    data.exit()
    data.exit()
    return bytes(data.encode())


def data_sections(sections: list[tuple[int, bytes]]) -> list[bytes]:
    """The payloads of the data sections (a batch carries one encoded message in each)."""
    return [section_value(raw) for code, raw in sections if code == DATA]


def is_batch(sections: list[tuple[int, bytes]]) -> bool:
    """A batch (message format 0x80013700, which proton does not expose) is an envelope whose body is
    data sections that are themselves encoded messages; an application body never starts with a
    section descriptor, so that is the tell."""
    bodies = [raw for code, raw in sections if code in (DATA, AMQP_VALUE, AMQP_SEQUENCE)]
    if not bodies or any(code == AMQP_VALUE or code == AMQP_SEQUENCE for code, _ in sections):
        return False
    for payload in data_sections(sections):
        if len(payload) < 3 or payload[0] != 0x00 or payload[1] not in (0x53, 0x80):
            return False
        try:
            if _descriptor(payload, 0) not in range(HEADER, FOOTER + 1):
                return False
        except CodecError:
            return False
    return True


def sym_map(values: dict[str, Any]) -> dict[symbol, Any]:
    return {symbol(k) if not isinstance(k, symbol) else k: v for k, v in values.items()}
