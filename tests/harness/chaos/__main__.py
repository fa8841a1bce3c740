import sys

from tests.harness.chaos.cli import main

sys.exit(main())
