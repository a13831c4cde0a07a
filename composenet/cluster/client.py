"""The store client: etcd's v3 JSON gateway, one request at a time, over etcd3gw.

Owns: the HTTP session (TLS from the settings only: ``trust_env`` off, so REQUESTS_CA_BUNDLE,
CURL_CA_BUNDLE and proxy variables never override them), endpoint failover (the endpoint that
answered last is tried first; a connection failure, a timeout or an "unavailable" answer moves
to the next one; when none answers, :class:`StoreUnavailable` names the store and the reason),
and the operations composenet needs: range with the header's revision, put, create-if-absent
with the holder returned, delete, transactions, leases (grant, keep-alive, revoke, TTL),
compaction and status. Values are bytes; keys are text (``keys.py``).

The gateway's JSON: keys and values base64, int64 fields as strings, and zero, false and empty
fields left out (``succeeded``, ``kvs``, ``count``, ``lease``, ``TTL``): every reader here takes
a missing field as its zero.

Must not: know what the keys mean (``registry.py``), or watch (``watch.py``: etcd3gw's watch
hangs on errors, compactions and restarts, so it has its own streaming loop over ``session``).
etcd3gw and requests are imported when the first request is made (they cost ~0.12 s): a CLI
command that needs no store never pays for them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from composenet.cluster.errors import StoreError, StoreUnavailable
from composenet.cluster.keys import prefix_end
from composenet.cluster.settings import StoreURL

if TYPE_CHECKING:
    import requests

DEFAULT_TIMEOUT = 2.0  # seconds per request and endpoint
API = "/v3/"  # etcd >= 3.4 (etcd3gw would ask /version for it on the first call otherwise)
# gRPC codes the gateway reports for a member that cannot serve now: try the next endpoint.
RETRY_CODES = {4, 14}  # DEADLINE_EXCEEDED, UNAVAILABLE
CODE_COMPACTED = 11  # OUT_OF_RANGE: "required revision has been compacted"
CODE_NOT_FOUND = 5  # e.g. "requested lease not found"


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KV:
        return cls(unb64(kv.get("key")).decode(errors="replace"), unb64(kv.get("value")),
                   int(kv.get("create_revision", 0)), int(kv.get("mod_revision", 0)), int(kv.get("version", 0)),
                   int(kv.get("lease", 0)))


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[dict[str, Any]]

    def kvs(self, index: int) -> list[KV]:
        """The key-values of the range response at ``index`` (of the branch that ran)."""
        if index >= len(self.responses):
            return []
        rng = self.responses[index].get("response_range") or {}
        return [KV.from_json(kv) for kv in rng.get("kvs", [])]


# -- transaction parts (the gateway's JSON) ------------------------------------------------------


def op_put(key: str, value: bytes, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = lease
    return {"request_put": body}


def op_range(key: str, prefix: bool = False) -> dict[str, Any]:
    body = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    return {"request_range": body}


def op_delete(key: str, prefix: bool = False) -> dict[str, Any]:
    body = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    return {"request_delete_range": body}


def cmp_absent(key: str) -> dict[str, Any]:
    """True while ``key`` does not exist."""
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": 0}


def cmp_exists(key: str) -> dict[str, Any]:
    return {"key": b64(key), "target": "CREATE", "result": "GREATER", "create_revision": 0}


def cmp_empty(prefix: str) -> dict[str, Any]:
    """True while no key starts with ``prefix`` (etcd compares an empty range with a zero key)."""
    return {**cmp_absent(prefix), "range_end": b64(prefix_end(prefix))}


def cmp_unchanged_since(prefix: str, revision: int) -> dict[str, Any]:
    """True while no key under ``prefix`` was created or modified after ``revision`` (deletions
    are not seen: they only free what the caller read as taken)."""
    return {"key": b64(prefix), "range_end": b64(prefix_end(prefix)), "target": "MOD", "result": "LESS",
            "mod_revision": revision + 1}


def cmp_mod(key: str, revision: int) -> dict[str, Any]:
    """True while ``key`` was last modified at ``revision`` (0: does not exist)."""
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": revision}


def cmp_value(key: str, value: bytes) -> dict[str, Any]:
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


# -- the client -------------------------------------------------------------------------------


def _detail(exc: Exception) -> tuple[str, int | None]:
    """(message, gRPC code) of an etcd3gw exception carrying the gateway's error body."""
    text = getattr(exc, "detail_text", None) or str(exc) or type(exc).__name__
    try:
        body = json.loads(text)
    except (ValueError, TypeError):
        return str(text).strip()[:300], None
    if isinstance(body, dict):
        code = body.get("code")
        return str(body.get("error") or body.get("message") or text).strip()[:300], code if isinstance(code, int) else None
    return str(text).strip()[:300], None


class Store:
    """A client of the store ``url`` (see the module doc). Thread-safe as requests sessions are
    for simple requests; the agent gives each thread its own ``Store``."""

    def __init__(self, url: StoreURL, timeout: float = DEFAULT_TIMEOUT):
        self.url = url
        self.timeout = timeout
        self.bases = url.base_urls()
        self.current = 0  # index of the endpoint that answered last
        self._session: requests.Session | None = None
        self._clients: list[Any] | None = None

    def __repr__(self) -> str:
        return f"Store({self.url})"

    # -- transport --------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            import requests  # deferred: ~0.1 s to import, paid only by commands that use a store

            s = requests.Session()
            s.trust_env = False  # REQUESTS_CA_BUNDLE & co. would override verify, proxies apply
            if self.url.tls:
                s.verify = self.url.ca or True
                if self.url.cert and self.url.key:
                    s.cert = (self.url.cert, self.url.key)
            self._session = s
        return self._session

    def _gateways(self) -> list[Any]:
        if self._clients is None:
            import etcd3gw  # deferred: ~0.12 s to import, paid only by commands that use a store

            self._clients = [etcd3gw.Etcd3Client(host=e.host, port=e.port, protocol=self.url.scheme,
                                                 timeout=self.timeout, api_path=API, session=self.session)
                             for e in self.url.endpoints]
        return self._clients

    def url_for(self, path: str, index: int | None = None) -> str:
        return self.bases[self.current if index is None else index] + API + path.lstrip("/")

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` on the current endpoint, then on the others in turn.
        Raises StoreUnavailable (no endpoint answered) or StoreError (the store said no)."""
        from etcd3gw import exceptions as gw  # deferred: see _gateways (already loaded by then)

        clients = self._gateways()
        reasons = []
        n = len(clients)
        for i in range(n):
            index = (self.current + i) % n
            try:
                out = clients[index].post(self.url_for(path, index), json=body)
            except (gw.ConnectionFailedError, gw.ConnectionTimeoutError) as e:
                reasons.append(f"{self.url.endpoints[index].netloc()}: {_detail(e)[0] or type(e).__name__}")
                continue
            except gw.Etcd3Exception as e:
                message, code = _detail(e)
                if code in RETRY_CODES:
                    reasons.append(f"{self.url.endpoints[index].netloc()}: {message}")
                    continue
                raise StoreError(f"the store ({self.url}) refused {path}: {message}", retryable=False) from None
            except ValueError as e:  # a body that is not JSON: not an etcd gateway
                reasons.append(f"{self.url.endpoints[index].netloc()}: not an etcd gateway answer ({e})")
                continue
            self.current = index
            return out if isinstance(out, dict) else {}
        raise StoreUnavailable(f"cannot reach the cluster store {self.url}: " + "; ".join(reasons),
                               hint="is etcd running and reachable from this host? (--store / COMPOSENET_STORE)")

    # -- key-values -------------------------------------------------------------------------

    def status(self) -> str:
        """The version of the member that answered (a cheap liveness probe)."""
        return str(self.call("maintenance/status", {}).get("version", ""))

    def range(self, prefix: str) -> tuple[int, list[KV]]:
        """(header revision, every key-value under ``prefix``, sorted by key). Watching from the
        revision + 1 misses nothing that happened after this read."""
        r = self.call("kv/range", {"key": b64(prefix), "range_end": b64(prefix_end(prefix))})
        return int(r.get("header", {}).get("revision", 0)), [KV.from_json(kv) for kv in r.get("kvs", [])]

    def get(self, key: str) -> KV | None:
        r = self.call("kv/range", {"key": b64(key)})
        kvs = r.get("kvs", [])
        return KV.from_json(kvs[0]) if kvs else None

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = lease
        return int(self.call("kv/put", body).get("header", {}).get("revision", 0))

    def txn(self, compare: Iterable[dict[str, Any]], success: Iterable[dict[str, Any]] = (),
            failure: Iterable[dict[str, Any]] = ()) -> TxnResult:
        r = self.call("kv/txn", {"compare": list(compare), "success": list(success), "failure": list(failure)})
        return TxnResult(bool(r.get("succeeded", False)), int(r.get("header", {}).get("revision", 0)),
                         list(r.get("responses", [])))

    def create(self, key: str, value: bytes, lease: int = 0) -> tuple[bool, KV | None]:
        """Put ``key`` only if it does not exist: (True, None), or (False, what holds it)."""
        r = self.txn([cmp_absent(key)], [op_put(key, value, lease)], [op_range(key)])
        if r.succeeded:
            return True, None
        held = r.kvs(0)
        return False, held[0] if held else None

    def delete(self, key: str, prefix: bool = False) -> int:
        body = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_end(key))
        return int(self.call("kv/deleterange", body).get("deleted", 0))

    def compact(self, revision: int) -> None:
        self.call("kv/compaction", {"revision": revision, "physical": True})

    # -- leases -----------------------------------------------------------------------------

    def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (its id, the TTL granted)."""
        r = self.call("lease/grant", {"TTL": ttl})
        if r.get("error"):
            raise StoreError(f"the store ({self.url}) refused a lease: {r['error']}")
        return int(r["ID"]), int(r.get("TTL", ttl))

    def keepalive(self, lease: int) -> int:
        """Renew ``lease``: its TTL again, or 0 when the store no longer knows it (expired)."""
        r = self.call("lease/keepalive", {"ID": lease})
        result = r.get("result", r)
        return max(0, int(result.get("TTL", 0)))

    def time_to_live(self, lease: int) -> tuple[int, int]:
        """(seconds left, TTL granted) of ``lease``; (-1, 0) when it does not exist."""
        r = self.call("kv/lease/timetolive", {"ID": lease})
        return int(r.get("TTL", 0)), int(r.get("grantedTTL", 0))

    def revoke(self, lease: int) -> bool:
        """Revoke ``lease`` (its keys go at once); False if it did not exist."""
        try:
            self.call("kv/lease/revoke", {"ID": lease})
        except StoreError as e:
            if "not found" in e.message:
                return False
            raise
        return True
