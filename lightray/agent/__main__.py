"""``python -m lightray.agent``: the same as the ``lightray-agent`` command."""
import sys

from .cli import main

sys.exit(main())
