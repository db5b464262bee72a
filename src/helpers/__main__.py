"""``python -m helpers <command>``: the course's command line, built in :mod:`helpers.cli`."""

import sys

from helpers.cli import main

if __name__ == "__main__":
    sys.exit(main())
