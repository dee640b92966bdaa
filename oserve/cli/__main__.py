import sys

from oserve.cli import main

sys.exit(main())
