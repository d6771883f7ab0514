"""``python -m tlskit``: the command line."""

from tlskit.cli.main import main

raise SystemExit(main())
