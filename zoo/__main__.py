"""``python -m zoo``: the same as the ``zoo`` command."""

from zoo.app.cli import main

raise SystemExit(main())
