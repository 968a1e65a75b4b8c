"""Entry point of `python -m rllib_integration.embedded`."""
import sys

from .cli import main

sys.exit(main())
