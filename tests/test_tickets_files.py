"""nginx-format ticket key files (DESIGN §3) and the cron-safe rotation directory behind ``tlskit stek``."""

from __future__ import annotations

import base64
import fcntl
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tlskit.errors import ConfigError
from tlskit.tickets import TicketKey, open_ticket, seal_ticket
from tlskit.tickets.files import (
    LOCK,
    file_mode,
    load_key_dir,
    load_key_files,
    read_key_file,
    rotate_key_dir,
    write_key_file,
)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_key_file_written_by_openssl_rand_80_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "openssl.key"
    subprocess.run(["openssl", "rand", "-out", str(path), "80"], check=True)
    raw = path.read_bytes()
    key = read_key_file(path)
    assert (key.name, bytes(key.hmac_key), bytes(key.aes_key)) == (raw[:16], raw[16:48], raw[48:80])
    assert key.to_bytes() == raw
    copy = tmp_path / "copy.key"
    write_key_file(copy, key)
    assert copy.read_bytes() == raw
    ticket = seal_ticket(load_key_files([path]).encryption_key(), b"session state", os.urandom)
    assert open_ticket(load_key_files([copy]), ticket) == b"session state"


def test_48_byte_file_is_name_aes_hmac(tmp_path: Path) -> None:
    raw = os.urandom(48)
    key = read_key_file(_write(tmp_path / "k48", raw))
    assert (key.name, bytes(key.aes_key), bytes(key.hmac_key)) == (raw[:16], raw[16:32], raw[32:48])
    assert key.to_bytes() == raw
    assert open_ticket(load_key_files([tmp_path / "k48"]), seal_ticket(key, b"s", os.urandom)) == b"s"


def test_first_file_encrypts_and_every_file_decrypts(tmp_path: Path) -> None:
    a, b = _write(tmp_path / "a", os.urandom(80)), _write(tmp_path / "b", os.urandom(48))
    ring = load_key_files([a, b])
    assert ring.encryption_key().name == a.read_bytes()[:16]
    old = seal_ticket(read_key_file(b), b"old", os.urandom)
    assert open_ticket(ring, old) == b"old"
    assert open_ticket(load_key_files([a]), old) is None


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda d: d / "missing.key", "no such ticket key file; create one with `tlskit stek new"),
        (lambda d: _write(d / "short.key", os.urandom(79)), "79 bytes; a ticket key file holds 80 bytes (or 48)"),
        (lambda d: _write(d / "empty.key", b""), "0 bytes; a ticket key file holds 80 bytes"),
        (lambda d: _write(d / "b64.key", base64.b64encode(os.urandom(80)) + b"\n"), "looks base64-encoded"),
        (lambda d: d, "is a directory"),
    ],
    ids=["missing", "79-bytes", "empty", "base64", "directory"],
)
def test_unusable_key_file_is_a_one_line_config_error_naming_file_and_fix(tmp_path, setup, expected) -> None:  # type: ignore[no-untyped-def]
    path = setup(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_key_files([path])
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_two_files_with_one_name_but_different_keys_are_refused(tmp_path: Path) -> None:
    raw = os.urandom(80)
    a = _write(tmp_path / "a", raw)
    b = _write(tmp_path / "b", raw[:16] + os.urandom(64))
    with pytest.raises(ConfigError, match=r"same key name as .*a but a different key"):
        load_key_files([a, b])
    assert len(load_key_files([a, _write(tmp_path / "same", raw)]).keys) == 1


def test_no_files_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no ticket key files given"):
        load_key_files([])


def test_written_key_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        write_key_file(tmp_path / "k", TicketKey.generate(os.urandom))
    finally:
        os.umask(old)
    assert file_mode(tmp_path / "k") == 0o600


def test_write_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = _write(tmp_path / "k", os.urandom(80))
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="exists; use --force"):
        write_key_file(path, TicketKey.generate(os.urandom))
    assert path.read_bytes() == before
    new = TicketKey.generate(os.urandom)
    write_key_file(path, new, force=True)
    assert path.read_bytes() == new.to_bytes()
    assert file_mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]  # no temporary file left behind


def test_rotation_moves_current_to_previous_and_makes_a_new_current(tmp_path: Path) -> None:
    first = rotate_key_dir(tmp_path)
    assert first.rotated and first.retired is None
    keys = load_key_dir(tmp_path).keys  # and a previous.key that opens nothing: servers given both files start
    assert len(keys) == 2 and keys[0].name == first.current  # from the first run (they refused a missing one)
    assert load_key_files([tmp_path / "current.key", tmp_path / "previous.key"]).keys[0].name == first.current
    second = rotate_key_dir(tmp_path)
    ring = load_key_dir(tmp_path)
    assert [k.name for k in ring.keys] == [second.current, first.current]
    assert second.retired == first.current
    third = rotate_key_dir(tmp_path)
    assert [k.name for k in load_key_dir(tmp_path).keys] == [third.current, second.current]
    assert {file_mode(p) for p in tmp_path.glob("*.key")} == {0o600}


def test_rotation_promotes_a_pre_distributed_next_key(tmp_path: Path) -> None:
    rotate_key_dir(tmp_path)
    upcoming = TicketKey.generate(os.urandom)
    write_key_file(tmp_path / "next.key", upcoming)
    result = rotate_key_dir(tmp_path)
    assert result.current == upcoming.name
    names = [k.name for k in load_key_dir(tmp_path).keys]
    assert names[:2] == [upcoming.name, result.retired]
    assert len(names) == 3 and names[2] not in names[:2]  # a new next.key


def test_rotation_skips_while_current_is_younger_than_min_age(tmp_path: Path) -> None:
    first = rotate_key_dir(tmp_path)
    skipped = rotate_key_dir(tmp_path, min_age=3000)
    assert not skipped.rotated and skipped.current == first.current
    old = (tmp_path / "current.key").stat().st_mtime - 3600
    os.utime(tmp_path / "current.key", (old, old))
    assert rotate_key_dir(tmp_path, min_age=3000).rotated


def test_rotation_skips_while_another_holds_the_lock(tmp_path: Path) -> None:
    rotate_key_dir(tmp_path)
    fd = os.open(tmp_path / LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = rotate_key_dir(tmp_path)
    finally:
        os.close(fd)
    assert not result.rotated and result.skipped == "another rotation holds the lock"


def test_concurrent_cron_runs_rotate_exactly_once(tmp_path: Path) -> None:
    first = rotate_key_dir(tmp_path)
    old = (tmp_path / "current.key").stat().st_mtime - 7200
    os.utime(tmp_path / "current.key", (old, old))
    runs = [subprocess.Popen([sys.executable, "-m", "tlskit", "stek", "rotate", str(tmp_path), "--min-age", "1h"],
                             stdout=subprocess.PIPE, text=True) for _ in range(6)]
    outputs = [run.communicate(timeout=60)[0] for run in runs]
    assert [run.returncode for run in runs] == [0] * 6
    assert sum(": rotated: current" in out for out in outputs) == 1, outputs
    ring = load_key_dir(tmp_path)
    assert [k.name for k in ring.keys][1] == first.current


def test_readers_always_find_whole_key_files_during_rotations(tmp_path: Path) -> None:
    rotate_key_dir(tmp_path)
    errors: list[Exception] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                ring = load_key_dir(tmp_path)
                assert 1 <= len(ring.keys) <= 2
            except Exception as e:  # the test reports whatever a reader met
                errors.append(e)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    for _ in range(40):
        rotate_key_dir(tmp_path)
    done.set()
    for t in readers:
        t.join()
    assert errors == []


def test_rotate_names_the_mistake_of_a_file_given_for_the_directory(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    write_key_file(key, TicketKey.generate(os.urandom))
    with pytest.raises(ConfigError, match=r"a file, not a directory: give the directory that holds"):
        rotate_key_dir(key)  # (it said to create it with mkdir -m 700 k.key)


def test_a_wrapped_base64_key_file_is_recognised(tmp_path: Path) -> None:
    """`openssl rand -base64 80` wraps at 64 columns: the newline inside made the hint miss it (fleet review)."""
    encoded = base64.encodebytes(os.urandom(80))  # (wrapped, as openssl does)
    assert encoded.count(b"\n") > 1
    path = tmp_path / "b64.key"
    path.write_bytes(encoded)
    with pytest.raises(ConfigError, match="looks base64-encoded"):
        read_key_file(path)
