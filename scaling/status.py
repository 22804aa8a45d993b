"""`python -m scaling.status`: a shim into scaling.cli.status, where the command lives."""

import sys

if __name__ == "__main__":
    from scaling.cli.status import main

    sys.exit(main())
