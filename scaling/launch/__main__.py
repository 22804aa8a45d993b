"""`python -m scaling.launch`: see scaling.cli.launch."""

import sys

from scaling.cli.launch import main

sys.exit(main())
