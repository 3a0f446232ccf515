"""``python -m vobiz_async``: the same as the ``vobiz-async`` command."""

import sys

from .cli import main

sys.exit(main())
