"""``python -m ablate.cli`` is the ``ablate`` command."""

from ablate.cli import run

run()
