"""`python -m open_mclip.search`: see `open_mclip.search.cli`."""

import sys

from .cli import main

sys.exit(main())
