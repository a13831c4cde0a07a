"""``python -m composenet.dns CONFIG``: same as ``python -m composenet.dns.server CONFIG``."""

import sys

from composenet.dns.server import main

sys.exit(main())
