"""RFC 8448 example handshake traces, parsed into bytes at import time.

Source: ``tests/vectors/rfc8448.txt`` (a copy of ``shared/reference/rfc8448-example-handshake-traces.txt``,
which is draft-ietf-tls-tls13-vectors, the text published as RFC 8448). If the copy is missing we look for
``shared/reference`` above this directory, then the ``TLSKIT_RFC8448`` environment variable.

Sections: 3 = simple 1-RTT, 4 = resumed 0-RTT, 5 = HelloRetryRequest, 6 = client authentication,
7 = compatibility mode (middlebox ChangeCipherSpec, session id echo). Each ``{client}``/``{server}``
paragraph becomes a :class:`Step`; every ``label (N octets):  hex...`` line below it becomes
``step.values[label]`` (page-break headers and footers inside hex dumps are dropped; every value's length
is checked against its "(N octets)" at import). ``salt:  0`` becomes 32 zero bytes (RFC 8446 §7.1: all
traces use SHA-256), ``(empty)`` becomes ``b""``.

    >>> ch = find(3, "client", "send handshake record").values["payload"]     # ClientHello, 196 bytes
    >>> find(3, "server", 'derive secret "tls13 s hs traffic"').values["expanded"]
    >>> find(5, "client", "create an ephemeral x25519 key pair", occurrence=1).values["public key"]

``SERVER_RSA_KEY`` holds §2's private key fields (``modulus``, ``public exponent``, ``private exponent``,
``prime1``, ``prime2``, ``exponent1``, ``exponent2``, ``coefficient``) as big-endian bytes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_FILENAME = "rfc8448-example-handshake-traces.txt"


@dataclass(frozen=True)
class Step:
    """One ``{client}``/``{server}`` paragraph of a trace."""

    actor: str  # "client" | "server"
    action: str  # heading text without the trailing colon, wrapped lines joined by one space
    values: dict[str, bytes]


def _locate() -> Path:
    here = Path(__file__).resolve().parent
    candidates = [here / "rfc8448.txt"]
    for parent in here.parents:
        candidates.append(parent / "shared" / "reference" / _FILENAME)
        candidates.append(parent / ".." / "shared" / "reference" / _FILENAME)
    env = os.environ.get("TLSKIT_RFC8448")
    if env:
        candidates.append(Path(env))
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"RFC 8448 trace text not found; copy it to {here / 'rfc8448.txt'} "
                            "or set TLSKIT_RFC8448")


_PAGE_ARTEFACT = re.compile(
    r"^\f|^Thomson\s.*\[Page \d+\]\s*$|^RFC 8448\s.*\S\s*$|^Internet-Draft\s+TLS 1\.3 Traces\s"
)
_SECTION = re.compile(r"^(\d+)\.  \S")
_STEP = re.compile(r"^   \{(client|server)\}  (.*)$")
_VALUE = re.compile(r"^      (\S[^:]*?)(?: \((\d+) octets?\))?:  (.*)$")
_HEX_CONT = re.compile(r"^         ([0-9a-f]{2}(?: [0-9a-f]{2})*)\s*$")
_HEX = re.compile(r"[0-9a-f]{2}(?: [0-9a-f]{2})*")


def _value_bytes(text: str) -> bytes:
    text = text.strip()
    if text == "(empty)":
        return b""
    if text == "0 (all zero octets)":
        return bytes(32)
    if not _HEX.fullmatch(text):
        raise ValueError(f"not a hex dump: {text!r}")
    return bytes.fromhex(text)


def _parse(text: str) -> tuple[dict[int, list[Step]], dict[str, bytes]]:
    sections: dict[int, list[Step]] = {}
    rsa_key: dict[str, list[str]] = {}
    steps: list[Step] | None = None
    section_no = 0
    heading: list[str] | None = None  # open heading of the current step, until the first blank line
    actor = ""
    raw: dict[str, list[str]] = {}
    declared: dict[str, int | None] = {}
    label: str | None = None

    def close_step() -> None:
        nonlocal label
        if steps is not None and heading is not None:
            values: dict[str, bytes] = {}
            action = " ".join(heading).rstrip(":")
            for key, parts in raw.items():
                values[key] = _value_bytes(" ".join(parts))
                want = declared[key]
                if want is not None and len(values[key]) != want:
                    raise ValueError(f"§{section_no} {actor} {action!r}: {key} is {len(values[key])} "
                                     f"bytes, text says {want}")
            steps.append(Step(actor, action, values))
        raw.clear()
        declared.clear()
        label = None

    for line in text.splitlines():
        if _PAGE_ARTEFACT.search(line):
            continue
        if m := _SECTION.match(line):
            close_step()
            heading = None
            section_no = int(m.group(1))
            steps = sections.setdefault(section_no, []) if 3 <= section_no <= 7 else None
            continue
        if section_no == 2:  # the server's RSA key, at 3-space indentation
            if m := re.match(r"^   (\S[^:]*?)(?: \(public\))?:  (.*)$", line):
                label = m.group(1)
                rsa_key[label] = [m.group(2)]
            elif label and (m := re.match(r"^      ([0-9a-f ]+)$", line)):
                rsa_key[label].append(m.group(1))
            continue
        if steps is None:
            continue
        if m := _STEP.match(line):
            close_step()
            actor, heading = m.group(1), [m.group(2).strip()]
            heading_open = True
            continue
        if not line.strip():
            heading_open = False
            continue
        if heading is None:
            continue
        if heading_open:  # a wrapped heading: "(same as server handshake\n      secret)"
            heading.append(line.strip())
            continue
        if m := _VALUE.match(line):
            label = m.group(1)
            if label in raw:
                raise ValueError(f"§{section_no} {actor} {' '.join(heading)!r}: duplicate {label}")
            raw[label] = [m.group(3)]
            declared[label] = int(m.group(2)) if m.group(2) else None
        elif label is not None and (m := _HEX_CONT.match(line)):
            raw[label].append(m.group(1))
        elif line.startswith("   ") and not line.startswith("      "):  # prose ends the step
            close_step()
            heading = None
        else:
            raise ValueError(f"§{section_no}: unexpected line {line!r}")
    close_step()
    return sections, {k: bytes.fromhex(" ".join(v)) for k, v in rsa_key.items()}


PATH = _locate()
_SECTIONS, SERVER_RSA_KEY = _parse(PATH.read_text(encoding="ascii"))


def section(number: int) -> list[Step]:
    """All steps of RFC 8448 §``number`` (3..7), in document order."""
    return list(_SECTIONS[number])


def find(number: int, actor: str, action_substring: str, occurrence: int = 0) -> Step:
    """The ``occurrence``-th step of §``number`` by ``actor`` whose action contains ``action_substring``."""
    hits = [s for s in _SECTIONS[number] if s.actor == actor and action_substring in s.action]
    if occurrence >= len(hits):
        raise KeyError(f"§{number}: {actor} step containing {action_substring!r} #{occurrence} "
                       f"not found ({len(hits)} matches)")
    return hits[occurrence]
