"""``python -m darcyvae.cli``: the ``darcyvae`` command."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
