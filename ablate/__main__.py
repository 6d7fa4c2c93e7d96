"""``python -m ablate`` is the ``ablate`` command (workers are started this way)."""

from ablate.cli import run

run()
