"""``tlskit stek new|rotate|show`` as a user runs them (``python -m tlskit`` in a subprocess)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tlskit.tickets.files import file_mode, read_key_file


def stek(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tlskit", "stek", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_new_writes_an_80_byte_key_file_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "ticket.key"
    made = stek("new", path)
    assert made.returncode == 0, made.stderr
    key = read_key_file(path)
    assert made.stdout.strip() == f"wrote {path} (key name {key.name.hex()}, 80 bytes, mode 0600)"
    assert len(path.read_bytes()) == 80 and file_mode(path) == 0o600
    again = stek("new", path)
    assert again.returncode == 2
    assert again.stderr == f"tlskit stek new: error: {path}: exists; use --force to replace it " \
                           "(tickets under the old key stop resuming)\n"
    assert read_key_file(path).to_bytes() == key.to_bytes()
    assert stek("new", path, "--force").returncode == 0
    assert read_key_file(path).name != key.name


def test_rotate_then_show_lists_names_and_ages_but_never_key_bytes(tmp_path: Path) -> None:
    assert stek("rotate", tmp_path).returncode == 0
    rotated = stek("rotate", tmp_path)
    assert rotated.returncode == 0 and ": rotated: current " in rotated.stdout
    openssl = tmp_path.parent / f"{tmp_path.name}-openssl.key"
    subprocess.run(["openssl", "rand", "-out", str(openssl), "80"], check=True)
    shown = stek("show", tmp_path, openssl, "--json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert [(r["role"], r["encrypts"]) for r in rows] == [("current", True), ("previous", False), ("file", False)]
    assert rows[0]["name"] == read_key_file(tmp_path / "current.key").name.hex()
    assert all(0 <= r["age_seconds"] < 60 and r["bytes"] == 80 for r in rows)
    text = stek("show", tmp_path, openssl)
    for path in (tmp_path / "current.key", tmp_path / "previous.key", openssl):
        raw = path.read_bytes()
        for output in (shown.stdout, text.stdout):
            assert raw[16:].hex() not in output and raw[16:32].hex() not in output and raw[48:64].hex() not in output
    assert read_key_file(tmp_path / "previous.key").name.hex() in text.stdout


def test_show_reports_a_bad_file_in_one_line_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_bytes(os.urandom(81))
    shown = stek("show", bad)
    assert shown.returncode == 2  # a key file that cannot be used, as for rotate and new (show exited 1)
    assert shown.stderr.count("\n") == 1 and "81 bytes; a ticket key file holds 80 bytes (or 48)" in shown.stderr


def test_show_json_of_a_bad_file_prints_no_document(tmp_path: Path) -> None:
    """It printed `[]`, which reads as "no keys"; the other --json tools print nothing on a usage error."""
    bad, good = tmp_path / "bad.key", tmp_path / "good.key"
    bad.write_bytes(os.urandom(81))
    assert stek("new", good).returncode == 0
    for paths in ([bad], [good, bad]):
        shown = stek("show", *paths, "--json")
        assert shown.returncode == 2 and shown.stdout == ""
        assert shown.stderr.startswith("tlskit stek show: error: ") and shown.stderr.count("\n") == 1


def test_show_of_a_missing_path_offers_a_directory_or_a_file(tmp_path: Path) -> None:
    """It said "create one with `tlskit stek new DIR`": a key file where a rotation directory was meant."""
    missing = tmp_path / "stek"
    shown = stek("show", missing)
    assert shown.returncode == 2
    assert shown.stderr == (f"tlskit stek show: error: {missing}: no such key file or directory; make a rotation "
                            f"directory with `mkdir -m 700 {missing} && tlskit stek rotate {missing}`, or one key "
                            f"file with `tlskit stek new {missing}`\n")


def test_stek_and_ca_help_give_their_exit_codes() -> None:
    for tool in (["stek"], ["ca"]):
        shown = subprocess.run([sys.executable, "-m", "tlskit", *tool, "--help"], capture_output=True, text=True,
                               timeout=60)
        assert shown.returncode == 0 and "exit status: 0 " in shown.stdout and "2 usage error" in shown.stdout


def test_rotate_min_age_skips_a_fresh_key(tmp_path: Path) -> None:
    stek("rotate", tmp_path)
    skipped = stek("rotate", tmp_path, "--min-age", "50m")  # it said "younger than 3000s"
    assert skipped.returncode == 0
    assert re.fullmatch(r".*: not rotated: current\.key is \d+s old, younger than the minimum age 50m\n",
                        skipped.stdout), skipped.stdout
    old = time.time() - 7000
    os.utime(tmp_path / "current.key", (old, old))
    skipped = stek("rotate", tmp_path, "--min-age", "2h")
    assert re.fullmatch(r".*: not rotated: current\.key is 1h 56m 4\ds old, younger than the minimum age 2h\n",
                        skipped.stdout), skipped.stdout
    bad = stek("rotate", tmp_path, "--min-age", "soon")
    assert bad.returncode == 2 and "give a duration like 90s, 30m, 1h or 1d" in bad.stderr


def test_on_rotate_runs_after_a_rotation_and_not_when_it_is_skipped(tmp_path: Path) -> None:
    """The cron line `rotate --min-age 50m && reload` reloaded every hour: a skipped rotation exits 0 too."""
    keys, marker = tmp_path / "stek", tmp_path / "reloads"
    keys.mkdir()
    hook = f"echo reload >> {marker}"
    rotated = stek("rotate", keys, "--min-age", "50m", "--on-rotate", hook)
    assert rotated.returncode == 0 and marker.read_text() == "reload\n"
    skipped = stek("rotate", keys, "--min-age", "50m", "--on-rotate", hook)
    assert skipped.returncode == 0 and "not rotated" in skipped.stdout and marker.read_text() == "reload\n"
    failed = stek("rotate", keys, "--on-rotate", "exit 3")
    assert failed.returncode == 1 and ": rotated: current " in failed.stdout
    assert "--on-rotate command exited with status 3 (the keys were rotated" in failed.stderr


def test_rotate_of_a_missing_directory_says_how_to_make_it(tmp_path: Path) -> None:
    result = stek("rotate", tmp_path / "nope")
    assert result.returncode == 2
    assert result.stderr.strip() == f"tlskit stek rotate: error: {tmp_path / 'nope'}: not a directory; " \
                                    f"create it with `mkdir -m 700 {tmp_path / 'nope'}`"
