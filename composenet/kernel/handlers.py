"""The handlers composenet runs with: one registry per run (``default_handlers``), in the order
observe reads them. Tests of the executor build registries of fake handlers instead.
"""

from __future__ import annotations

from composenet.kernel import failpoints, files, guard, ipvlan, links, netinfo, nft, processes, resolver
from composenet.kernel.context import Handlers


def default_handlers() -> Handlers:
    """Fresh handlers for one run: links, addresses, routes and sysctls; the nft tables; the
    project's membership in the forwarding guard; /etc/netns files; the resolver, its peers'
    records, the supervisor and the service processes; then the host facts. (With a failpoint
    armed by a crash test, each is wrapped to count its steps.)"""
    return Handlers(failpoints.wrap([
        links.KernelHandler(), ipvlan.IpvlanHandler(), nft.NftHandler(), guard.GuardHandler(), files.FilesHandler(),
        resolver.ResolverHandler(), resolver.PeersHandler(), processes.SupervisorHandler(),
        processes.ProcessHandler(), netinfo.HostFacts()]))
