"""Graph change events and their durable log."""

from kgweave.changes.events import ChangeEvent, ChangeKind
from kgweave.changes.log import EventLog

__all__ = ["ChangeEvent", "ChangeKind", "EventLog"]
