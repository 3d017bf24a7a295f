"""Images that are cheap to send and costly to decode: the worst case of the memory
bound (a 49-megapixel 16-bit RGBA PNG is 381 KB on the wire and 392 MB decoded)."""

from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def flat_png(width: int, height: int, bit_depth: int = 16, colour_type: int = 6) -> bytes:
    """A valid PNG of one flat colour (RGBA by default), written row by row so that
    making it never holds its decoded size in memory."""
    bands = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = b"\0" + bytes(width * bands * bit_depth // 8)  # filter byte, then the samples
    packer = zlib.compressobj(9)
    compressed = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", compressed)
        + _chunk(b"IEND", b"")
    )
