"""`python -m scaling.describe`: a shim into scaling.cli.describe, where the command lives."""

import sys

if __name__ == "__main__":
    from scaling.cli.describe import main

    sys.exit(main())
