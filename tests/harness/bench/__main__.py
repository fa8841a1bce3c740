from tests.harness.bench.cli import main

raise SystemExit(main())
