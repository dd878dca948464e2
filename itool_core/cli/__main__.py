"""``python -m itool_core.cli``: the core's commands without the flow ones (``itool run`` lives in flows.cli)."""

import sys

from . import main

sys.exit(main())
