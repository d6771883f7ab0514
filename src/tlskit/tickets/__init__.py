"""Session tickets (RFC 8446 §4.6.1): sealing session state under rotating ticket keys."""

from .keyring import TicketKey, TicketKeyRing, TicketKeys
from .sealing import open_ticket, seal_ticket

__all__ = ["TicketKey", "TicketKeyRing", "TicketKeys", "open_ticket", "seal_ticket"]
