"""`python -m gitswarm`: the same command as `gitswarm`."""

import sys

from .cli import main

sys.exit(main())
