"""`python -m chatapp` is `chatapp`."""

from chatapp.cli import main

raise SystemExit(main())
