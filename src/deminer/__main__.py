import sys

from deminer.cli import main

sys.exit(main())
