"""FastStream broker middlewares, in the one order they run (outermost first)."""

from s2s_daemon.messaging.middlewares.correlation import CorrelationMiddleware

DEFAULT_MIDDLEWARES = (CorrelationMiddleware,)

__all__ = ["DEFAULT_MIDDLEWARES", "CorrelationMiddleware"]
