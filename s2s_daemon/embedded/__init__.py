"""Embedded services the project starts itself (the Mongo-wire server)."""

from s2s_daemon.embedded.mongo import EmbeddedMongo, free_port

__all__ = ["EmbeddedMongo", "free_port"]
