"""The DNS wire format, as far as the resolver needs it (pure; no I/O, no dnslib).

Owns: the protocol constants (record types, classes, response codes), name encoding, the bytes
of a local answer's header and records, the walk over a query's question and its EDNS record,
header-only replies and the UDP size rule (truncation). Every function takes and returns
bytes; none knows what a name means to a project (``zone.py``) or decides how to answer
(``answer.py``). The daemon and the tables both build on this module; it imports nothing of
composenet.

No dnslib here: these functions run for queries and forwarded answers on the daemon's hot
path, and dnslib would cost an object tree per packet (and its import at start-up).
"""

from __future__ import annotations

import struct

QTYPE_A = 1
QTYPE_PTR = 12
QTYPE_AAAA = 28
QTYPE_OPT = 41
QTYPE_ANY = 255
QCLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

FLAG_TC = 0x02  # in byte 2 of the header


def encode_name(name: str) -> bytes:
    """``"Web.Split_Frontend."`` -> ``b"\\x03web\\x0fsplit_frontend\\x00"`` (lower-cased).

    Raises ValueError for names that cannot be a DNS name (empty label, label > 63 bytes,
    name > 255 bytes, non-ASCII).
    """
    text = name.rstrip(".").lower()
    if not text:
        raise ValueError("empty name")
    out = bytearray()
    for label in text.split("."):
        raw = label.encode("ascii")
        if not raw or len(raw) > 63:
            raise ValueError(f"bad label {label!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError("name longer than 255 bytes")
    return bytes(out)


def decode_name(wire: bytes) -> str:
    """Inverse of :func:`encode_name` for an uncompressed name (used for logs and tests)."""
    labels = []
    i = 0
    while wire[i]:
        n = wire[i]
        labels.append(wire[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += n + 1
    return ".".join(labels) + "."


def answer_header(rcode: int, ancount: int, rd: bool) -> bytes:
    """Flags and counts (bytes 2..12 of the header) of a local answer: QR, RA, RD as asked,
    AA off (Docker's QR,RD,RA); one question, ``ancount`` answers."""
    flags = 0x8080 | (0x0100 if rd else 0) | rcode
    return struct.pack("!HHHHH", flags, 1, ancount, 0, 0)


def answer_record(qtype: int, ttl: int, rdata: bytes) -> bytes:
    """One answer record whose owner is a pointer to the question name at offset 12, so the
    record does not depend on the case the asker used."""
    return b"\xc0\x0c" + struct.pack("!HHIH", qtype, QCLASS_IN, ttl, len(rdata)) + rdata


def reply(data: bytes, rcode: int, question: bytes | None) -> bytes:
    """A header-only (or header + ``question``) reply to query ``data`` with ``rcode``: its ID,
    QR and RA set, opcode and RD kept, as for local answers."""
    flags = 0x8080 | (data[2] & 0x79) << 8 | rcode
    if question is None:
        return data[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)
    return data[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + question


def question_end(data: bytes) -> int:
    """Offset just past the single question of a well-formed query, or -1.

    Requires QR=0, opcode QUERY, exactly one question, an uncompressed qname of at most 255
    bytes with labels of at most 63 bytes, and the 4 bytes of qtype and qclass."""
    n = len(data)
    if n < 17 or data[2] & 0xF8 or data[4] or data[5] != 1:
        return -1
    i = 12
    while i < n:
        length = data[i]
        if length == 0:
            end = i + 5
            return end if end <= n and i - 12 < 255 else -1
        if length > 63:
            return -1
        i += length + 1
    return -1


def edns_payload(data: bytes, end: int) -> tuple[int, int] | None:
    """(UDP payload size, DO bit) of the query's OPT record, or None without EDNS.

    ``end`` is the offset past the question. Walks the answer, authority and additional
    sections without dnslib; returns None on anything malformed."""
    try:
        counts = struct.unpack_from("!HHH", data, 6)
        i = end
        for section, count in enumerate(counts):
            for _ in range(count):
                i = skip_name(data, i)
                rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, i)
                if section == 2 and rtype == QTYPE_OPT:
                    return max(512, rclass), (ttl >> 15) & 1
                i += 10 + rdlen
    except (struct.error, IndexError):
        return None
    return None


def skip_name(data: bytes, i: int) -> int:
    """Offset past a (possibly compressed) name starting at ``i``; IndexError if truncated."""
    for _ in range(128):
        length = data[i]
        if length == 0:
            return i + 1
        if length & 0xC0 == 0xC0:
            data[i + 1]  # noqa: B018 -- bounds check
            return i + 2
        if length > 63:
            raise IndexError("bad label")
        i += length + 1
    raise IndexError("name too long")


def fit_udp(query: bytes, end: int, response: bytes) -> bytes:
    """``response`` if it fits the asker's UDP payload size, else a TC=1 reply with no records."""
    limit = 512
    if len(response) > limit:
        edns = edns_payload(query, end)
        if edns is not None:
            limit = edns[0]
    if len(response) <= limit:
        return response
    flags = struct.unpack_from("!H", response, 2)[0] | 0x0200
    return response[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + query[12:end]
