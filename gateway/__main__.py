"""``python -m gateway`` is ``infusion-gateway``."""

import sys

from gateway.cli import main

sys.exit(main())
