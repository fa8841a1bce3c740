import sys

from s2s_daemon.chaos.cli import main

sys.exit(main())
