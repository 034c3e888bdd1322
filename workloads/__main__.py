"""`python -m workloads` is the `optistack` command."""

import sys

from workloads.cli import main

sys.exit(main())
