"""Entry point of `python -m rlhf`; the commands live in rlhf.cli."""

import sys

from rlhf.cli import main

sys.exit(main())
