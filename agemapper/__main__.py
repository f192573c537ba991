"""``python -m agemapper``: the ``agemapper`` command (:mod:`agemapper.cli`)."""

import sys

from agemapper.cli import main

sys.exit(main())
