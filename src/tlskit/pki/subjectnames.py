"""Name constraints on what a certificate's subject says (RFC 5280 §4.2.1.10), which ``cryptography``'s path
validator leaves unchecked: it applies a CA's constraints to subjectAltName entries only.

As OpenSSL does (``NAME_CONSTRAINTS_check``, ``NAME_CONSTRAINTS_check_CN``), for every certificate below a CA
with NameConstraints:

* the subject, as a directoryName, compared after RFC 4518-style folding (ASCII case, runs of spaces), a
  permitted or excluded subtree being a prefix of its RDNs;
* each emailAddress attribute of the subject, as an rfc822Name;
* for the leaf with no DNS name in its subjectAltName, each commonName that looks like a host name (two or
  more labels), as a dNSName: a CN is what a client certificate's identity is read from (the proxy forwards
  it), so a CA limited to ``good.example`` must not vouch for ``CN=evil.example``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..enums import AlertDescription
from ..errors import CertificateError

__all__ = ["check_subject_constraints"]

_Names = tuple[frozenset[tuple[str, object, object]], ...]


def check_subject_constraints(path: Sequence[x509.Certificate], label: Callable[[x509.Certificate], str]) -> None:
    """``bad_certificate`` if a certificate's subject is outside the names a CA above it may issue."""
    for index, ca in enumerate(path[1:], start=1):
        constraints = _name_constraints(ca)
        if constraints is None:
            continue
        for position, cert in enumerate(path[:index]):
            if position > 0 and _folded(cert.subject) == _folded(cert.issuer):
                continue  # a self-issued CA certificate (key rollover): exempt, RFC 5280 §6.1.3 (b), as OpenSSL
            problem = _subject_problem(cert, constraints, leaf=position == 0)
            if problem is not None:
                raise CertificateError(AlertDescription.bad_certificate,
                                       f"{label(cert)} is outside the names {label(ca)} may issue: its {problem} "
                                       "(name constraints, RFC 5280 §4.2.1.10)")


def _name_constraints(cert: x509.Certificate) -> x509.NameConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None


def _subject_problem(cert: x509.Certificate, constraints: x509.NameConstraints, *, leaf: bool) -> str | None:
    subject = cert.subject
    if subject.rdns and not _allowed(constraints, x509.DirectoryName, functools.partial(_within_dn, subject)):
        return f"subject {subject.rfc4514_string()!r}"
    email_bases = any(isinstance(n, x509.RFC822Name)
                      for n in (*(constraints.permitted_subtrees or ()), *(constraints.excluded_subtrees or ())))
    for attribute in subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        email = str(attribute.value)
        if getattr(attribute, "_type", _IA5) != _IA5 or (email_bases and "@" not in email):
            return f"subject emailAddress {email!r} (not an IA5String mailbox: OpenSSL refuses it too)"
        if not _allowed(constraints, x509.RFC822Name, functools.partial(_within_email, email)):
            return f"subject emailAddress {email!r}"
    if leaf and not _dns_names(cert):
        for attribute in subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            name = str(attribute.value).rstrip("\0")  # trailing NULs are harmless (OpenSSL drops them)
            if "\0" in name:
                return f"commonName {name!r} (a NUL inside it, which could hide a host name from the check)"
            if _looks_like_host(name) and not _allowed(constraints, x509.DNSName,
                                                       functools.partial(_within_dns, name)):
                return f"commonName {name!r} (it has no DNS name in a subjectAltName, so its CN is checked)"
    return None


_IA5 = x509.name._ASN1Type.IA5String  # the ASN.1 string type, which cryptography keeps (``_type``) but hides


def _allowed(constraints: x509.NameConstraints, kind: type[x509.GeneralName],
             within: Callable[[object], bool]) -> bool:
    """Permitted subtrees of ``kind``, if any, must hold the name; no excluded one of ``kind`` may."""
    permitted = [n.value for n in constraints.permitted_subtrees or () if isinstance(n, kind)]
    excluded = [n.value for n in constraints.excluded_subtrees or () if isinstance(n, kind)]
    if permitted and not any(within(base) for base in permitted):
        return False
    return not any(within(base) for base in excluded)


def _folded(name: x509.Name) -> _Names:
    """RDNs as OpenSSL's canonical encoding compares them: the text string types as one, ASCII lower case, ASCII
    white space dropped at both ends and inner runs of it as one space; other types (NumericString) as sent."""
    return tuple(frozenset((a.oid.dotted_string, *_canonical(a)) for a in rdn) for rdn in name.rdns)


def _canonical(attribute: x509.NameAttribute[Any]) -> tuple[object, object]:
    kind = getattr(attribute, "_type", None)
    if isinstance(attribute.value, str) and (kind is None or kind in _CANONICAL_TYPES):
        return "text", _SPACES.sub(" ", attribute.value.strip(_ASCII_SPACE)).translate(_ASCII_LOWER)
    return kind, attribute.value


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_SPACE = " \t\n\v\f\r"
_SPACES = re.compile(f"[{_ASCII_SPACE}]+")
_CANONICAL_TYPES = frozenset(getattr(x509.name._ASN1Type, t) for t in (  # OpenSSL's ASN1_MASK_CANON
    "UTF8String", "BMPString", "UniversalString", "PrintableString", "T61String", "IA5String", "VisibleString"))


def _within_dn(subject: x509.Name, base: object) -> bool:
    assert isinstance(base, x509.Name)
    prefix = _folded(base)
    return _folded(subject)[:len(prefix)] == prefix


def _within_dns(name: str, base: object) -> bool:
    """RFC 5280: ``base`` and any name with labels added on its left (OpenSSL: a leading "." only those)."""
    assert isinstance(base, str)
    name, base = name.translate(_ASCII_LOWER), base.translate(_ASCII_LOWER)
    if not base:
        return True
    if len(name) < len(base) or not name.endswith(base):
        return False
    return len(name) == len(base) or base.startswith(".") or name[-len(base) - 1] == "."


def _within_email(email: str, base: object) -> bool:
    """A mailbox (``base`` with "@"; "@host": any at that host), all of a host, or its subdomains (``.host``);
    the local part compared exactly, hosts in ASCII case only (a look-alike such as U+212A stays different)."""
    assert isinstance(base, str)
    local, at, host = email.rpartition("@")
    if not at:
        return False
    host = host.translate(_ASCII_LOWER)
    if "@" in base:
        base_local, _, base_host = base.rpartition("@")
        return (not base_local or local == base_local) and host == base_host.translate(_ASCII_LOWER)
    if base.startswith("."):
        return host.endswith(base.translate(_ASCII_LOWER))
    return host == base.translate(_ASCII_LOWER)


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        return []


def _looks_like_host(cn: str) -> bool:
    """OpenSSL's test of a CN (``cn2dnsid``): letters, digits, "_", and inner "-" and "." with two or more
    labels; "alice" or "Alice Smith" is no host name and is left alone."""
    cn = cn.rstrip("\0")
    if len(cn) < 3 or "." not in cn:
        return False
    for i, c in enumerate(cn):
        if c.isascii() and (c.isalnum() or c == "_"):
            continue
        if 0 < i < len(cn) - 1:
            if c == "-":
                continue
            if c == "." and cn[i + 1] not in ".-" and cn[i - 1] != "-":
                continue
        return False
    return True
