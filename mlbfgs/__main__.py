"""``python -m mlbfgs``: the command line."""

from .cli import main

raise SystemExit(main())
