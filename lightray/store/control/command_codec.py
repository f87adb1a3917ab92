"""Control store commands as bytes, for the replicated log: no pickle.

    leader: validate(command) ─ encode ─▶ log entry bytes ─▶ every replica: decode ─▶ apply

A log entry arrives from another replica, so decoding must never run code
or trust a length: the format is a tiny tagged one, and ``decode`` checks
every tag and length, then runs ``commands.validate`` on the result, before
anything is applied. A command is a tuple of str, bytes, int, float, bool
and None (lightray.store.control.commands), so six tags cover it:

    version (1 byte) · count (1 byte) · per field: tag (1 byte) + payload
        N  None            (no payload)
        T  True, F  False  (no payload)
        I  int             8 bytes, signed big-endian
        D  float           8 bytes, IEEE 754 big-endian
        S  str             4-byte length + UTF-8
        B  bytes           4-byte length + bytes

Bad bytes raise CommandCodecError (a ValueError) naming what is wrong.
"""
from __future__ import annotations

import struct

from .commands import validate

VERSION = 1
MAX_FIELDS = 32                 # the longest command has 10
_LENGTH = struct.Struct(">I")
_INT = struct.Struct(">q")
_FLOAT = struct.Struct(">d")


class CommandCodecError(ValueError):
    """Bytes that are not an encoded control store command."""


def encode(command) -> bytes:
    """The bytes of a command (validated first: TypeError/ValueError if malformed)."""
    command = validate(command)
    parts = [bytes((VERSION, len(command)))]
    for value in command:
        kind = type(value)
        if value is None:
            parts.append(b"N")
        elif kind is bool:
            parts.append(b"T" if value else b"F")
        elif kind is int:
            parts.append(b"I" + _INT.pack(value))
        elif kind is float:
            parts.append(b"D" + _FLOAT.pack(value))
        elif kind is str:
            raw = value.encode("utf-8")
            parts.append(b"S" + _LENGTH.pack(len(raw)) + raw)
        elif kind is bytes:
            parts.append(b"B" + _LENGTH.pack(len(value)) + value)
        else:   # validate() lets no other type through
            raise TypeError(f"a command field cannot be a {kind.__name__}")
    return b"".join(parts)


def decode(data) -> tuple:
    """The command in data, validated; CommandCodecError if data is not one."""
    data = bytes(data)
    if len(data) < 2:
        raise CommandCodecError(f"an encoded command has at least 2 bytes, got {len(data)}")
    if data[0] != VERSION:
        raise CommandCodecError(f"command encoding version {data[0]}, this lightray "
                                f"reads {VERSION}")
    count = data[1]
    if not 1 <= count <= MAX_FIELDS:
        raise CommandCodecError(f"a command has 1 to {MAX_FIELDS} fields, got {count}")
    position = 2
    fields = []
    for number in range(count):
        if position >= len(data):
            raise CommandCodecError(f"the bytes end before field {number}")
        tag = data[position]
        position += 1
        if tag == 0x4E:                    # N
            fields.append(None)
        elif tag == 0x54 or tag == 0x46:   # T, F
            fields.append(tag == 0x54)
        elif tag == 0x49 or tag == 0x44:   # I, D
            if position + 8 > len(data):
                raise CommandCodecError(f"field {number} is cut short")
            layout = _INT if tag == 0x49 else _FLOAT
            fields.append(layout.unpack_from(data, position)[0])
            position += 8
        elif tag == 0x53 or tag == 0x42:   # S, B
            if position + 4 > len(data):
                raise CommandCodecError(f"field {number}'s length is cut short")
            (length,) = _LENGTH.unpack_from(data, position)
            position += 4
            if position + length > len(data):
                raise CommandCodecError(f"field {number} says {length} bytes, "
                                        f"{len(data) - position} remain")
            raw = data[position:position + length]
            position += length
            if tag == 0x42:
                fields.append(raw)
            else:
                try:
                    fields.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise CommandCodecError(f"field {number} is not UTF-8 text") from None
        else:
            raise CommandCodecError(f"field {number} has the unknown tag {tag:#04x}")
    if position != len(data):
        raise CommandCodecError(f"{len(data) - position} bytes follow the last field")
    try:
        return validate(tuple(fields))
    except (TypeError, ValueError) as error:
        raise CommandCodecError(f"not a valid command: {error}") from None
