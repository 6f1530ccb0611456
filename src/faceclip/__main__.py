import sys

from faceclip.cli import main

sys.exit(main())
