"""`python -m dialer` is the `dialer` command."""

import sys

from dialer.cli import main

sys.exit(main())
