"""``python -m dhan`` (also what ``torchrun -m dhan`` runs)."""

import sys

from dhan.cli import main

sys.exit(main())
