"""Demo downstream services with fault knobs."""

from s2s_daemon.demo.services import Faults, ServiceState, serve_demo, service_a, service_b

__all__ = ["Faults", "ServiceState", "serve_demo", "service_a", "service_b"]
