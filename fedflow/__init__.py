"""fedflow: a life-sciences data federation platform.

The package holds the shared core (:mod:`fedflow.core`, a leaf every layer imports) and the
command-line interface (:mod:`fedflow.cli`, on top of every layer). Importing :mod:`fedflow`
imports nothing else, so the layers can depend on the core without pulling in the CLI.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
