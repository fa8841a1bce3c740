from s2s_daemon.bench.cli import main

raise SystemExit(main())
