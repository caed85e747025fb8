"""`python -m agent`: the device agent."""

import sys

from agent.main import main

sys.exit(main())
