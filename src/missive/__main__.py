"""``python -m missive`` runs the command-line interface."""

from missive.cli import main

raise SystemExit(main())
