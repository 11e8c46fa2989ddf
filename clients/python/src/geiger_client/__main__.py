"""``python -m geiger_client``: see :mod:`geiger_client.cli`."""

import sys

from .cli import main

sys.exit(main())
