"""composenet's DNS: one resolver daemon per project, one listener per network.

The daemon (``python -m composenet.dns.server CONFIG``) runs in the host namespace and binds
UDP and TCP port 53 on each network's gateway address; each service's resolv.conf names the
gateway of its first network. It identifies the asker by the query's source address and answers
with Docker's name semantics, scoped to the networks the asker shares with the target.

A container on a macvlan network cannot reach the gateways (a macvlan link never talks to its
parent's host): for it the daemon also binds 127.0.0.11:53 inside the container's namespace
(``namespaces``; the sockets are made there, then the daemon returns to its own namespace), and
the container's resolv.conf names 127.0.0.11, as Docker's embedded DNS. A query on such a
listener is from that container, whatever its source address: it gets that container's view.

Config file (JSON, written by the planner; the daemon re-reads it on SIGHUP and swaps its
tables atomically, binding new listeners and closing removed ones; no query is dropped)::

    {
      "project": "split",
      "ttl": 5,                       # TTL of local answers (seconds; optional, default 5)
      "forward_timeout": 2.0,         # per upstream attempt, seconds (optional, default 2.0)
      "pidfile": "/run/composenet/split/dns.pid",
      "upstreams": ["198.51.100.53"], # default upstream servers (host resolv.conf);
                                      # IP, IP:PORT or [IPv6]:PORT
      "listeners": [                  # one per network with a resolver
        {"network": "split_frontend", "address": "172.18.0.1", "port": 53, "internal": false},
        {"network": "split_backend", "address": "172.19.0.1", "port": 53, "internal": true}
      ],
      "namespaces": [                 # optional: listeners inside container namespaces
        {"netns": "split-mv-1", "container": "split-mv-1", "network": "split_lan"}
                                      # "address" (default 127.0.0.11), "port" (default 53)
      ],
      "containers": [
        {
          "name": "split-web-1",           # container name (resolvable)
          "service": "web",                # service name (resolvable; all replicas)
          "hostname": "web-host",          # resolvable when set; null otherwise
          "register": true,                # false: network_mode service:X sharers (not in DNS)
          "upstreams": ["198.51.100.53"],  # the service's `dns:` or the default
          "links": [["db-alias", "db"]],   # (alias, target service): only this container sees it
          "endpoints": [
            {"network": "split_frontend", "ipv4": "172.18.0.2", "ipv6": null,
             "aliases": ["www"], "internal": false}
          ]
        }
      ]
    }

Names (case-insensitive, trailing dot optional) visible to a container are those of every
endpoint on a network it shares: service name, container name, hostname, aliases, each also as
``<name>.<network>``; plus its own links. The answer is the target's address on the shared
network. Project names the asker cannot see: NXDOMAIN, never forwarded. Other names are
forwarded to the asker's upstreams, except from a container whose networks are all internal
(REFUSED at once). Queries from sources that are neither containers of the config, nor on a
listener's network, nor the host itself get no answer: it is not an open resolver.

Containers of other projects on the networks a resolver serves, or shares with its own
containers (``external: true``, `network connect`, standalone networks), are merged into the
config at load time from their projects' records: see ``peers.py``. Containers of other hosts
on cluster-wide overlay networks are merged the same way from the files the cluster agent
writes: see ``remote.py``.

Modules. The daemon: ``server.py`` (entry point, event loop, life cycle, forwarding cache) and
the parts it is made of, sharing the state declared in ``state.py``: ``listeners.py`` (sockets,
in the host and in container namespaces), ``udp.py`` with ``fastio.py`` (UDP askers, the hot
path), ``tcp.py`` (TCP askers), ``forward.py`` (upstream servers), ``access.py`` (who may ask).
Pure: ``config.py`` (this contract, checked), ``zone.py`` (the precomputed answer tables),
``answer.py`` (the decision per query), ``wire.py`` (packet bytes). ``peers.py``: names across
projects, shared with the planner's side; ``remote.py``: names across hosts, shared with the
cluster agent; ``running.py``: which daemon is a project's resolver on this host.

This package module holds no code and must not import anything: the daemon's start-up and
the planner both import the package, and must not pay for what they do not use.
"""
