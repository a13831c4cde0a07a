"""``python -m composenet.dns CONFIG``: same as ``python -m composenet.dns.server CONFIG``.

Owns nothing but that alias; must not hold code of its own (``server.main`` is the daemon's one
entry point, the one the executor and the tests start).
"""

import sys

from composenet.dns.server import main

sys.exit(main())
