"""``python -m ablate`` is the ``ablate`` command (workers are started this way)."""

import sys

from ablate.cli import main

sys.exit(main())
