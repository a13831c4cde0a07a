"""echo.py for both address families: one IPv6 socket per port with IPV6_V6ONLY off, so it
answers IPv4 and IPv6 clients alike, each with one line ``<peer address> <hostname>`` (IPv4
peers are printed plainly, not as ::ffff:a.b.c.d).

    python echo_dual.py [--tcp PORT]... [--udp PORT]... [--max-seconds N]

It exits by itself after --max-seconds (default 600), so a leaked server never lives forever.
"""

from __future__ import annotations

from echo import main  # echo.py, next to this script (a script's own folder is on sys.path)

if __name__ == "__main__":
    main(dual=True)
