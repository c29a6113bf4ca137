"""`python -m piper.frontend`: the same as the piper-capture command."""

import sys

from piper.tools.piper_capture import main

sys.exit(main())
