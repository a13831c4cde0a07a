"""System-call primitives, no knowledge of projects or resources: network namespaces (create,
enter, delete), and the libc calls composenet makes.

Layer: the lowest but the leaves (``errors``, ``paths``); used by ``kernel`` and by the resolver
daemon (``dns``), which must start fast and imports nothing else of composenet.
"""
