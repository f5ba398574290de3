"""``python -m bnncl.cli`` (and ``torchrun -m bnncl.cli``): the ``bnncl`` command."""

import sys

from bnncl.cli import main

sys.exit(main())
