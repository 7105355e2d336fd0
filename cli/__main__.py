"""`python -m cli ...` runs the `ticketflow` command with this interpreter (tests, benchmarks)."""

import sys

from cli.main import main

sys.exit(main())
