"""Ticket key files in nginx's ``ssl_session_ticket_key`` format, and a rotation directory for cron.

A file is 80 raw bytes (name ‖ HMAC key ‖ AES key) or 48 (name ‖ AES key ‖ HMAC key), as ``openssl rand 80``
writes them. Listed files follow nginx's order: the first encrypts, all decrypt. A rotation directory holds
``current.key`` (encrypts), ``previous.key`` and optionally ``next.key`` (decrypt); ``rotate_key_dir`` moves
them along with renames, so a reader never sees a missing or half-written file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .keyring import TicketKey, TicketKeyRing

CURRENT, PREVIOUS, NEXT = "current.key", "previous.key", "next.key"
LOCK = ".rotate.lock"
SLOTS = (CURRENT, PREVIOUS, NEXT)  # ring order: the first encrypts

StrPath = str | os.PathLike[str]


def read_key_file(path: StrPath) -> TicketKey:
    """One key from an 80- or 48-byte file; ``created_at`` is the file's mtime. One-line ``ConfigError``s."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = bytearray(f.read(4096))
            created = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such ticket key file; create one with `tlskit stek new {p}`") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory; give a key file, or load a rotation directory "
                          "(current.key, previous.key) with load_key_dir") from None
    except PermissionError:
        raise ConfigError(f"{p}: permission denied reading the ticket key file; run as its owner "
                          "(keep it mode 0600)") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the ticket key file: {e.strerror or e}") from None
    try:
        if len(data) not in (80, 48):
            _explain_size(p, bytes(data))
        return TicketKey.from_bytes(data, created_at=created, source=str(p))
    finally:
        data[:] = bytes(len(data))


def _explain_size(path: Path, data: bytes) -> None:
    try:
        decoded = base64.b64decode(b"".join(data.split()), validate=True)  # (`openssl rand -base64 80` wraps)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) in (80, 48):
        raise ConfigError(f"{path}: looks base64-encoded; key files hold raw bytes: "
                          f"`base64 -d {path} > {path}.raw` or make a new one with `openssl rand 80 > FILE`")
    # TicketKey.from_bytes raises the generic size error naming the file.


def load_key_files(paths: Sequence[StrPath]) -> TicketKeyRing:
    """A ring from nginx-ordered files: the first encrypts, all decrypt. Identical files count once."""
    if not paths:
        raise ConfigError("no ticket key files given; make one with `tlskit stek new FILE`")
    return TicketKeyRing(_unique([(Path(p), read_key_file(p)) for p in paths]))


def _unique(loaded: Sequence[tuple[Path, TicketKey]]) -> list[TicketKey]:
    seen: dict[bytes, tuple[Path, TicketKey]] = {}
    keys = []
    for path, key in loaded:
        if key.name in seen:
            other_path, other = seen[key.name]
            if other.to_bytes() != key.to_bytes():
                raise ConfigError(f"{path}: same key name as {other_path} but a different key; "
                                  "replace one of them with `tlskit stek new FILE --force`")
            continue  # the same key twice (previous.key right after a rotation is the old current.key)
        seen[key.name] = (path, key)
        keys.append(key)
    return keys


def key_dir_files(directory: StrPath) -> list[tuple[str, Path]]:
    """The slots present in a rotation directory, in ring order: (slot, path)."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"{d}: not a directory; create it and run `tlskit stek rotate {d}`")
    return [(slot, d / slot) for slot in SLOTS if (d / slot).exists()]


def load_key_dir(directory: StrPath) -> TicketKeyRing:
    """A ring from a rotation directory: current.key encrypts; previous.key and next.key decrypt."""
    files = key_dir_files(directory)
    if not files or files[0][0] != CURRENT:
        raise ConfigError(f"{directory}: no current.key; run `tlskit stek rotate {directory}` to create one")
    return TicketKeyRing(_unique([(p, read_key_file(p)) for _, p in files]))


def write_key_file(path: StrPath, key: TicketKey, *, force: bool = False) -> None:
    """Write ``key`` mode 0600; refuses to replace an existing file unless ``force`` (then atomically)."""
    p = Path(path)
    if force:
        tmp = p.with_name(f".{p.name}.{os.urandom(6).hex()}.tmp")
        _write_new(tmp, key)
        os.replace(tmp, p)
        _fsync_dir(p.parent)
        return
    try:
        _write_new(p, key)
    except FileExistsError:
        raise ConfigError(f"{p}: exists; use --force to replace it (tickets under the old key stop resuming)") \
            from None
    _fsync_dir(p.parent)


def _write_new(path: Path, key: TicketKey) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        raise ConfigError(f"{path.parent}: no such directory; create it first (mkdir -m 700)") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied; write key files as their owner") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        data = key.to_bytes()
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, kw_only=True, slots=True)
class Rotation:
    """What ``rotate_key_dir`` did: the new current key's name, the one it replaced, or why it skipped."""

    rotated: bool
    current: bytes | None = None
    retired: bytes | None = None
    skipped: str | None = None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock on ``DIR/.rotate.lock``: yields whether this process holds it."""
    try:
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except PermissionError:
        raise ConfigError(f"{directory}: permission denied; rotate as the key directory's owner") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def rotate_key_dir(
    directory: StrPath,
    *,
    min_age: float = 0.0,
    random: Callable[[int], bytes] = os.urandom,
    clock: Callable[[], float] = time.time,
) -> Rotation:
    """current → previous, then next.key (if present, replaced by a new one) or a new key → current.

    Safe to run from cron concurrently: a run that finds another holding the lock file skips, and
    ``min_age`` (seconds) skips while current.key is younger than that (so two runs in a row rotate once).
    Each file is written whole under a temporary name and renamed into place, so current.key always exists
    and a reader sees whole files; each file's mtime is when its key entered that slot.
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ConfigError(f"{d}: a file, not a directory: give the directory that holds (or is to hold) "
                          f"{CURRENT} and {PREVIOUS}, e.g. {d.parent}")
    if not d.is_dir():
        raise ConfigError(f"{d}: not a directory; create it with `mkdir -m 700 {d}`")
    with _locked(d) as acquired:
        if not acquired:
            return Rotation(rotated=False, skipped="another rotation holds the lock")
        current, previous, nxt = d / CURRENT, d / PREVIOUS, d / NEXT
        old = read_key_file(current) if current.exists() else None
        age = clock() - current.stat().st_mtime if old is not None else 0.0
        if old is not None and min_age > 0 and age < min_age:
            return Rotation(rotated=False, current=old.name, skipped=f"current.key is {_elapsed(age)} old, younger "
                                                                    f"than the minimum age {_duration(min_age)}")
        promoted = read_key_file(nxt) if nxt.exists() else None
        new_current = promoted if promoted is not None else TicketKey.generate(random)
        filler = None
        try:
            if old is not None:
                write_key_file(previous, old, force=True)
            elif not previous.exists():  # a first rotation: a previous.key that opens nothing, so a server given
                filler = TicketKey.generate(random)  # both files (as nginx is) starts from the first run
                write_key_file(previous, filler)
            write_key_file(current, new_current, force=True)
            if promoted is not None:
                write_key_file(nxt, TicketKey.generate(random), force=True)
            return Rotation(rotated=True, current=new_current.name, retired=old.name if old else None)
        finally:
            for key in (old, promoted, new_current, filler):
                if key is not None:
                    key.wipe()


_UNITS = (("d", 86400), ("h", 3600), ("m", 60))


def _duration(seconds: float) -> str:
    """A whole number of the largest unit, as ``--min-age`` is written: 3000 → ``50m``, 90 → ``90s``."""
    for unit, size in _UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _elapsed(seconds: float) -> str:
    """How old a file is, to the second and without rounding up: 2965.7 → ``49m 25s``."""
    left, parts = max(0, int(seconds)), []
    for unit, size in _UNITS:
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join([*parts, f"{left}s"] if left or not parts else parts)


def file_mode(path: StrPath) -> int:
    """Permission bits of a key file (``stek show`` flags anything readable beyond its owner)."""
    return stat.S_IMODE(os.stat(path).st_mode)
