"""composenet's cluster: overlay networks that span hosts, coordinated through etcd.

A ``driver: overlay`` network becomes cluster-wide when a store is configured (``--store URL`` or
COMPOSENET_STORE). The store holds, under ``/composenet/v1/`` (``keys.py``):

* one record per node: its name, underlay address (VTEP) and routes, on the node's lease;
* one record per cluster network: name, subnet, gateway, VNI, who created it (no lease: it
  lives until its last member leaves);
* per network, its member nodes, its leased addresses and its endpoints (container, service,
  aliases, address, MAC, node, VTEP), all on the lease of the node that holds them.

Each host runs one agent (``agent.py``, ``python -m composenet.cluster.agent CONFIG``): it keeps
the node's lease alive, re-publishes the host's own records when they are lost, follows the store
with a watch (``watch.py``; re-lists after a compaction or a reconnect) and applies what the
other hosts publish: FDB and neighbour entries on the network's VXLAN device, the set of VTEP
addresses allowed to send VXLAN, and the remote endpoints' names for the resolvers
(``composenet/dns/remote.py``).

Modules. Pure: ``settings.py`` (store URL and host settings), ``keys.py`` (the key layout),
``records.py`` (record formats), ``ipam.py`` (subnet, VNI and address decisions), ``mirror.py``
(the agent's copy of the store and what it implies for this host). Store I/O: ``client.py`` (the
gateway client: failover, transactions, leases), ``watch.py`` (the watch stream and the follower
that re-lists), ``registry.py`` (the cluster's operations: register a node, create a network,
lease addresses, publish and withdraw a host's records), ``host.py`` (what `up` and `down` do:
each change in the store and in the project's file at once, under the host's cluster lock).
Host I/O: ``dataplane.py`` (FDB, neighbours, the nft VTEP sets), ``files.py`` (the run-directory
files of the agent and of the projects), ``agentctl.py`` (start, find, signal, stop the agent)
and ``agent.py`` (the daemon). ``errors.py``: what they raise.

This package module holds no code and imports nothing: the resolver reads the names the agent
publishes without loading the store client.
"""
