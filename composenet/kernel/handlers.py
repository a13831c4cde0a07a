"""The handlers composenet runs with: one registry per run (``default_handlers``), in the order
observe reads them. Tests of the executor build registries of fake handlers instead.
"""

from __future__ import annotations

from composenet.kernel import files, guard, links, netinfo, nft, processes, resolver
from composenet.kernel.context import Handlers


def default_handlers() -> Handlers:
    """Fresh handlers for one run: links, addresses, routes and sysctls; the nft tables; the
    project's membership in the forwarding guard; /etc/netns files; the resolver, its peers'
    records and the service processes; then the host facts."""
    return Handlers([links.KernelHandler(), nft.NftHandler(), guard.GuardHandler(), files.FilesHandler(),
                     resolver.ResolverHandler(), resolver.PeersHandler(), processes.ProcessHandler(),
                     netinfo.HostFacts()])
