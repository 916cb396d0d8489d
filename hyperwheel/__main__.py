import sys

from hyperwheel.cli import main

sys.exit(main())
