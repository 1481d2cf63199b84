"""`python -m diffumnist` runs the command-line interface."""

import sys

from diffumnist.cli import main

sys.exit(main())
