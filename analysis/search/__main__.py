"""`python -m analysis.search`: see analysis.search.cli."""

import sys

from analysis.search.cli import main

sys.exit(main())
