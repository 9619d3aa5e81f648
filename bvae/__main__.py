"""``python -m bvae`` is the ``bvae`` command."""

import sys

from bvae.cli import main

sys.exit(main())
