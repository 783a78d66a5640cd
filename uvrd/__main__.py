import sys

from uvrd.cli import main

sys.exit(main())
