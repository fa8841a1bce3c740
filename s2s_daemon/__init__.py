"""s2s-daemon: reliable server-to-server communication over RabbitMQ, HTTP, Redis and MongoDB."""

from s2s_daemon.app import Daemon
from s2s_daemon.settings import Settings, load_settings

__all__ = ["Daemon", "Settings", "load_settings"]
