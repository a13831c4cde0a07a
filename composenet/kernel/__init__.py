"""The shell: everything that reads or changes the host. One handler per resource kind
(links, addresses, routes, sysctls; nftables; /etc/netns files; processes; the resolver), the
executor that runs a plan through them (journal, rollback, verify), observe, and the project's
run directory with its locks.

Layer: below ``pipeline`` and ``cli``; above ``dns`` (the resolver handler signals resolvers),
``compose``, ``core`` and ``linux`` (the system-call primitives it is built on). Must not: decide
what the kernel should hold (``core`` does) or print (callers pass an ``echo``).
"""
