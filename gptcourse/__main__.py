"""`python -m gptcourse ...` runs the command line (see `python -m gptcourse --help`)."""

import sys

from .cli import main

sys.exit(main())
