"""``python -m fedflow.cli``: the same as the ``fedflow`` command."""

from fedflow.cli import main

main()
