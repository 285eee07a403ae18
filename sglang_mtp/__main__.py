"""``python -m sglang_mtp`` = the ``sglang-mtp`` command."""

import sys

from sglang_mtp.cli import main

sys.exit(main())
