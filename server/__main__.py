"""`python -m server serve ...` is `responses-bridge serve ...`."""

from server.cli import main

raise SystemExit(main())
