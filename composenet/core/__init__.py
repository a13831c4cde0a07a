"""The pure core: the model of a project, kernel resources, IPAM, the desired state, the diff,
the ordered plan, its rendering, the nftables ruleset and the status of containers.

Layer: imports only ``errors``, ``paths`` and the standard library (no I/O, no clock, no
randomness), so every function here is testable without root and deterministic: same input,
same bytes. ``compose`` builds the model it reads; ``kernel`` observes and applies what it plans.
"""
