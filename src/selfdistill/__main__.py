import sys

from selfdistill.cli import main

sys.exit(main())
