"""Dev-only harness around the daemon: the benchmark (``python -m tests.harness.bench``, ``make bench``) and the
chaos suite (``python -m tests.harness.chaos``, ``make chaos``). Not part of the wheel."""
