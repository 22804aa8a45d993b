"""`python -m scaling.train`: see scaling.cli.train."""

import sys

from scaling.cli.train import main

sys.exit(main())
