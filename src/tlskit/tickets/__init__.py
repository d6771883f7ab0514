"""Session tickets (RFC 8446 §4.6.1): sealing session state under rotating ticket keys."""

from .files import load_key_dir, load_key_files
from .keyring import TicketKey, TicketKeyRing, TicketKeys
from .rotation import RotatingTicketKeys
from .sealing import open_ticket, seal_ticket

__all__ = [
    "RotatingTicketKeys",
    "TicketKey",
    "TicketKeyRing",
    "TicketKeys",
    "load_key_dir",
    "load_key_files",
    "open_ticket",
    "seal_ticket",
]
