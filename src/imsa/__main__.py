"""``python -m imsa`` is the ``imsa`` command."""

import sys

from .cli import main

sys.exit(main())
