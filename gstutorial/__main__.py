"""``python -m gstutorial``: the command line of :mod:`gstutorial.cli`."""

from gstutorial.cli import main

raise SystemExit(main())
