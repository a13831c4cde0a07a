"""Following the store: a watch stream that reports what etcd3gw swallows, and the follower that
lists, watches, and re-lists when it has to.

:func:`watch` is one ``POST /v3/watch`` stream from a revision, read line by line with a read
timeout. It yields each message's events and raises on every way a stream ends: the store
compacted the revision asked for (:class:`WatchCompacted`), an error line, a cancel, EOF or a
connection failure (:class:`WatchBroken`), and silence longer than the timeout
(:class:`WatchIdle`: the connection may be dead; a partition sends nothing at all).

:class:`Follower` keeps a consumer in step with a prefix, forever: list (a range whose header
revision says where the copy stands), then watch from that revision + 1 (nothing in between is
missed), apply events as they come. After a compaction, a broken stream or a reconnect it lists
again (the consumer replaces its whole copy); after mere silence it watches again from where it
was. Failures back off exponentially (``BACKOFF_MIN`` to ``BACKOFF_MAX``), and a success resets
the delay.

Must not: interpret keys (the consumer does), or write to the store.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from composenet.cluster.client import KV, Store, b64, unb64
from composenet.cluster.errors import StoreError
from composenet.cluster.keys import prefix_end

IDLE = 5.0  # seconds of silence before a stream is taken for dead and re-made
CONNECT_TIMEOUT = 2.0
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0


class WatchCompacted(Exception):
    """The revision the watch starts from was compacted away: list again."""

    def __init__(self, compact_revision: int):
        super().__init__(f"revision compacted (store keeps history from {compact_revision})")
        self.compact_revision = compact_revision


class WatchBroken(Exception):
    """The stream ended: an error line, a cancel, EOF, or a connection failure."""


class WatchIdle(Exception):
    """Nothing arrived for longer than the idle timeout."""


@dataclass(frozen=True)
class Event:
    kind: str  # "PUT" or "DELETE"
    key: str
    value: bytes  # empty for a DELETE
    mod_revision: int
    lease: int = 0

    @classmethod
    def from_json(cls, ev: dict[str, Any]) -> Event:
        kv = ev.get("kv", {})
        return cls(str(ev.get("type", "PUT")), unb64(kv.get("key")).decode(errors="replace"), unb64(kv.get("value")),
                   int(kv.get("mod_revision", 0)), int(kv.get("lease", 0)))


def _message(line: bytes) -> tuple[int, list[Event], bool]:
    """(header revision, events, created) of one line of the stream; raises on the end of it."""
    try:
        msg = json.loads(line)
    except ValueError:
        raise WatchBroken(f"not JSON: {line[:120]!r}") from None
    if not isinstance(msg, dict):
        raise WatchBroken(f"unexpected message: {line[:120]!r}")
    if "error" in msg:
        err = msg["error"]
        raise WatchBroken(str(err.get("message", err)) if isinstance(err, dict) else str(err))
    res = msg.get("result")
    if not isinstance(res, dict):
        raise WatchBroken(f"unexpected message: {line[:120]!r}")
    compacted = int(res.get("compact_revision", 0) or 0)
    if compacted:
        raise WatchCompacted(compacted)
    if res.get("canceled"):
        raise WatchBroken(f"watch canceled: {res.get('cancel_reason', '')}")
    revision = int(res.get("header", {}).get("revision", 0))
    return revision, [Event.from_json(ev) for ev in res.get("events", [])], bool(res.get("created"))


def watch(store: Store, prefix: str, start_revision: int, idle: float = IDLE) -> Iterator[tuple[int, list[Event], bool]]:
    """Yield (header revision, events, created) for each message of a watch of ``prefix`` from
    ``start_revision`` (the first message is the creation, with no events; a message without
    events after it is a progress notification). Ends only by raising (see the module doc).
    Tries the endpoints in turn until one accepts the stream."""
    import requests  # deferred: loaded with the client (see client.py)

    body: dict[str, Any] = {"create_request": {"key": b64(prefix), "range_end": b64(prefix_end(prefix)),
                               "start_revision": start_revision, "progress_notify": True}}
    reasons = []
    resp = None
    for i in range(len(store.bases)):
        index = (store.current + i) % len(store.bases)
        try:
            resp = store.session.post(store.url_for("watch", index), json=body, stream=True,
                                      timeout=(CONNECT_TIMEOUT, idle))
        except requests.exceptions.RequestException as e:
            reasons.append(f"{store.url.endpoints[index].netloc()}: {type(e).__name__}")
            continue
        if resp.status_code != 200:
            reasons.append(f"{store.url.endpoints[index].netloc()}: HTTP {resp.status_code}")
            resp.close()
            resp = None
            continue
        store.current = index
        break
    if resp is None:
        raise WatchBroken("no endpoint accepted the watch: " + "; ".join(reasons))
    with resp:
        try:
            for line in resp.iter_lines():
                if line:
                    yield _message(line)
        except requests.exceptions.ConnectionError as e:
            cause = e.args[0] if e.args else None
            if type(cause).__name__ in ("ReadTimeoutError", "ReadTimeout"):
                raise WatchIdle(f"nothing for {idle:g} s") from None
            raise WatchBroken(f"connection lost: {type(cause or e).__name__}") from None
        except requests.exceptions.RequestException as e:
            raise WatchBroken(f"connection lost: {type(e).__name__}") from None
    raise WatchBroken("the store closed the stream")


class Consumer(Protocol):
    """What a :class:`Follower` feeds (called from the follower's thread)."""

    def snapshot(self, revision: int, kvs: list[KV]) -> None:
        """The whole prefix as of ``revision``: replaces the consumer's copy."""

    def events(self, revision: int, events: list[Event]) -> None:
        """Changes up to ``revision``, in order."""

    def connection(self, up: bool, why: str) -> None:
        """The follower lost (``up`` False) or regained the store."""


class Follower:
    """List-then-watch ``prefix`` of ``store`` for ``consumer`` until ``stop`` is set (see the
    module doc). ``revision``: where the consumer's copy stands. ``lists``: how many times it
    listed (1 + the resyncs); ``compactions``: how many of those a compaction forced."""

    def __init__(self, store: Store, prefix: str, consumer: Consumer, idle: float = IDLE,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.prefix = prefix
        self.consumer = consumer
        self.idle = idle
        self.clock = clock
        self.revision = 0
        self.lists = 0
        self.compactions = 0
        self.connected = False

    def _set_connected(self, up: bool, why: str) -> None:
        if up != self.connected:
            self.connected = up
            self.consumer.connection(up, why)

    def list(self) -> None:
        revision, kvs = self.store.range(self.prefix)
        self.revision = revision
        self.lists += 1
        self.consumer.snapshot(revision, kvs)
        self._set_connected(True, f"listed at revision {revision}")

    def run(self, stop: threading.Event) -> None:
        must_list = True
        delay = BACKOFF_MIN
        while not stop.is_set():
            try:
                if must_list:
                    self.list()
                    must_list = False
                    delay = BACKOFF_MIN
                self._follow(stop)
            except WatchIdle:
                continue  # silence: watch again from where we are (no list, no delay)
            except WatchCompacted as e:
                must_list = True
                self.compactions += 1
                self._set_connected(True, str(e))
                continue
            except (WatchBroken, StoreError) as e:
                must_list = True
                self._set_connected(False, str(e))
                stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            except Exception as e:  # noqa: BLE001 -- a bug must not end the following: list again
                must_list = True
                self.connected = True  # reported as a loss, whatever the state
                self._set_connected(False, f"internal error: {e!r}")
                stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def _follow(self, stop: threading.Event) -> None:
        start = self.revision + 1
        for revision, events, created in watch(self.store, self.prefix, start, self.idle):
            if stop.is_set():
                return
            if created:
                if revision < self.revision:  # the store went back in time (restored, replaced)
                    raise WatchBroken(f"the store is at revision {revision}, behind {self.revision}")
                self._set_connected(True, f"watching from revision {start}")
                continue
            if events:
                self.revision = max(self.revision, max(ev.mod_revision for ev in events))
                self.consumer.events(self.revision, events)
            else:
                self.revision = max(self.revision, revision)
