import sys

from lawclf.cli import main

sys.exit(main())
