"""``python -m infermeter`` is the ``infermeter`` command."""

import sys

from infermeter.cli.main import main

sys.exit(main())
