"""The per-query decision: one query packet and the asker's :class:`View` -> what to do.

Owns: :class:`View` (what one asker sees, as the tables of ``zone.py`` precompute it) and
:func:`respond`, which turns a query into a response packet, a "forward this" decision or
nothing. Pure and stateless: it must not open sockets, read clocks or files, or build dnslib
objects; the daemon calls it for every query it receives.

Why precomputed tables: every answer a view can give is stored as wire bytes keyed by the
lower-cased question section (qname + qtype + qclass), so a local answer costs one hand-parsed
qname walk, one ``bytes.lower()``, one dict lookup and one concatenation (query ID +
precomputed flags/counts + the asker's own question bytes + the precomputed records); a plain
lower-case query (one question and nothing else, what stub resolvers send) skips the walk and
the ``lower()``: its question bytes are the key as they are. Answer names are compression
pointers to the question (``0xC00C``), so the records do not depend on the case the asker used.

A question not in the table is answered from the view's name sets, as ``zone.py``'s
documented choices say: a visible name of another type is NOERROR with no answers, a project
name the asker cannot see NXDOMAIN, anything else forwarded (or REFUSED for an asker whose
endpoints are all internal). Malformed queries: shorter than a header or with QR=1 (a
response): dropped silently, so two resolvers can never loop; opcode other than QUERY: NOTIMP;
no or several questions, a broken qname: FORMERR.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from composenet.dns.wire import (
    RCODE_FORMERR,
    RCODE_NOERROR,
    RCODE_NOTIMP,
    RCODE_NXDOMAIN,
    RCODE_REFUSED,
    reply,
)

# An entry of a view table: (flags+counts without RD, flags+counts with RD, answer orders); the
# query's RD bit (``data[2] & 1``) indexes the first two, a random pick among the orders the last.
Entry = tuple[bytes, bytes, tuple[bytes, ...]]

_rand = random.random
_PLAIN_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # header bytes 4..12: QD=1, AN=NS=AR=0


@dataclass
class View:
    """What one asker sees. ``table`` holds every local answer by lower-cased question bytes;
    ``names`` the visible names (NOERROR-empty for types not in the table); ``project`` every
    name of the project (NXDOMAIN when not visible); ``networks`` the project's network names
    as last labels (``x.<network>`` is a project name)."""

    table: dict[bytes, Entry]
    names: frozenset[bytes]
    project: frozenset[bytes]
    networks: frozenset[bytes]
    upstreams: tuple[str, ...]
    refuse: bool  # every endpoint internal: never forward


def respond(view: View, data: bytes) -> bytes | int | None:
    """The daemon's decision for one query packet.

    Returns the response packet (bytes); or an int, the offset just past the question, meaning
    "forward this query upstream"; or None, meaning "drop it" (not a query at all)."""
    # Fastest path, no walk: a plain query (one question, nothing else; what stub resolvers
    # send) whose question, exactly as sent, is a table key. Same answer as the path below:
    # a key is a well-formed question (so ``end`` is the packet's end) and lower-case (names
    # are encoded lower-cased; no table qtype or qclass byte is an upper-case ASCII letter).
    if data[4:12] == _PLAIN_COUNTS and not data[2] & 0xF8:
        entry = view.table.get(data[12:])
        if entry is not None:
            orders = entry[2]
            if len(orders) == 1:
                return data[:2] + entry[data[2] & 1] + data[12:] + orders[0]  # type: ignore[operator]
            return data[:2] + entry[data[2] & 1] + data[12:] + orders[int(_rand() * len(orders))]  # type: ignore[operator]
    # Fast path, inlined question walk (wire.question_end, without its call): one question,
    # QR=0, opcode 0.
    n = len(data)
    if n >= 17 and not data[2] & 0xF8 and not data[4] and data[5] == 1:
        i = 12
        while i < n:
            length = data[i]
            if length == 0 or length > 63:
                break
            i += length + 1
        else:
            return _malformed(data)
        end = i + 5
        if length or end > n or i - 12 >= 255:
            return _malformed(data)
        key = data[12:end].lower()  # label lengths are < 64, so lower() only touches letters
        entry = view.table.get(key)
        if entry is not None:
            orders = entry[2]
            if len(orders) == 1:
                return data[:2] + entry[data[2] & 1] + data[12:end] + orders[0]  # type: ignore[operator]
            return data[:2] + entry[data[2] & 1] + data[12:end] + orders[int(_rand() * len(orders))]  # type: ignore[operator]
        return _slow(view, data, end, key[:-4])
    return _malformed(data)


def _slow(view: View, data: bytes, end: int, name: bytes) -> bytes | int:
    question = data[12:end]
    if name in view.names:
        return reply(data, RCODE_NOERROR, question)
    if name in view.project:
        return reply(data, RCODE_NXDOMAIN, question)
    last = _last_label(name)
    if last is not None and last in view.networks:
        return reply(data, RCODE_NXDOMAIN, question)
    if view.refuse:
        return reply(data, RCODE_REFUSED, question)
    return end


def _last_label(name: bytes) -> bytes | None:
    i = 0
    last = None
    while name[i]:
        last = name[i + 1 : i + 1 + name[i]]
        i += name[i] + 1
    return last


def _malformed(data: bytes) -> bytes | None:
    if len(data) < 12 or data[2] & 0x80:
        return None  # not even a header, or a response: never answer (no loops, no reflection)
    if data[2] & 0x78:
        return reply(data, RCODE_NOTIMP, None)
    return reply(data, RCODE_FORMERR, None)
