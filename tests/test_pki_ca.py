"""The private CA (tlskit.pki.ca, `tlskit ca`): layout, issuing, serials, revocation, CRLs, clock skew."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from tests.interop.peers import require
from tlskit.cli.main import main
from tlskit.enums import AlertDescription
from tlskit.errors import CertificateError, ConfigError
from tlskit.pki import TrustStore, clear_cache, verify_client_chain, verify_server_chain
from tlskit.pki.ca import CertificateAuthority, format_serial, parse_reason, parse_serial

OCSP_URL = "http://127.0.0.1:9/ocsp"
CRL_URL = "http://127.0.0.1:9/crl.der"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path_factory.mktemp("ca") / "ca", intermediate=True,
                                     ocsp_url=OCSP_URL, crl_url=CRL_URL)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _trust(ca: CertificateAuthority) -> TrustStore:
    return TrustStore(roots=(ca.root,))


def _der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


# --- layout -----------------------------------------------------------------------------------------------


def test_init_writes_the_documented_layout_with_private_keys_0600(ca: CertificateAuthority) -> None:
    d = ca.directory
    for name in ("ca.json", "root.pem", "root.key", "intermediate.pem", "intermediate.key", "index.json"):
        assert (d / name).is_file(), name
    assert _mode(d) == 0o700
    assert _mode(d / "root.key") == _mode(d / "intermediate.key") == 0o600
    assert ca.issuer.issuer == ca.root.subject and ca.chain == [ca.issuer]
    constraints = ca.issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0


def test_init_refuses_a_directory_that_already_holds_a_ca(ca: CertificateAuthority) -> None:
    with pytest.raises(ConfigError, match="already holds a CA"):
        CertificateAuthority.init(ca.directory)


def test_opening_a_directory_that_is_not_a_ca_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tlskit ca init"):
        CertificateAuthority(tmp_path)


def test_init_rejects_non_http_urls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--ocsp-url"):
        CertificateAuthority.init(tmp_path / "x", ocsp_url="ldap://example/")


# --- issuing ----------------------------------------------------------------------------------------------


def test_issue_server_certificate_has_sans_aia_cdp_and_the_default_backdate(ca: CertificateAuthority,
                                                                           tmp_path: Path) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    issued = ca.issue(["www.example.test", "127.0.0.1", "*.api.example.test"], out=tmp_path / "srv")
    cert = issued.certificate
    assert _mode(issued.key_path) == 0o600
    assert x509.load_pem_x509_certificates(issued.chain_path.read_bytes()) == [cert, ca.issuer]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["www.example.test", "*.api.example.test"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location.value) for d in aia] == [
        (AuthorityInformationAccessOID.OCSP, OCSP_URL)]
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name == [x509.UniformResourceIdentifier(CRL_URL)]
    backdate = before - cert.not_valid_before_utc
    assert dt.timedelta(minutes=4) < backdate <= dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=90, minutes=5)
    leaf = verify_server_chain([_der(cert), _der(ca.issuer)], server_name="x.api.example.test",
                               trust=_trust(ca), now=dt.datetime.now(dt.UTC))
    assert leaf == cert


def test_issue_client_certificate_with_spiffe_id_passes_client_verification(ca: CertificateAuthority,
                                                                           tmp_path: Path) -> None:
    spiffe = "spiffe://cluster.local/ns/default/sa/web"
    issued = ca.issue([], client=True, spiffe=spiffe, days=1, out=tmp_path / "web")
    cert = issued.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    assert issued.chain_path == tmp_path / "web.pem"
    verify_client_chain([_der(cert), _der(ca.issuer)], trust=_trust(ca), now=dt.datetime.now(dt.UTC))


def test_issue_client_and_server_gets_both_usages(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert = ca.issue(["both.test"], client=True, server=True, out=tmp_path / "both").certificate
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


@pytest.mark.parametrize(("names", "spiffe", "message"), [
    ([], None, "at least one NAME"),
    (["bad name!"], None, "neither a DNS name"),
    (["ok.test"], "spiffe://Cluster.Local/x", "trust domain"),
    (["ok.test"], "https://example.com/x", "spiffe://"),
])
def test_issue_rejects_bad_names(ca: CertificateAuthority, tmp_path: Path, names: list[str],
                                 spiffe: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ca.issue(names, spiffe=spiffe, out=tmp_path / "bad")


def test_issue_never_overwrites_an_existing_key(ca: CertificateAuthority, tmp_path: Path) -> None:
    ca.issue(["once.test"], out=tmp_path / "once")
    with pytest.raises(ConfigError, match="exists"):
        ca.issue(["once.test"], out=tmp_path / "once")


def _issue_many(directory: str, out: str, worker: int, count: int) -> list[int]:
    ca = CertificateAuthority(directory)
    return [ca.issue([f"w{worker}-{i}.test"], out=f"{out}/w{worker}-{i}").serial for i in range(count)]


def test_concurrent_issuers_never_share_a_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")
    # A serial space of 60 makes collisions certain without the lock-and-index check.
    counter = iter(range(10**6))
    monkeypatch.setattr(x509, "random_serial_number", lambda: 1 + (next(counter) * 7919) % 60)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        results = pool.starmap(_issue_many, [(str(ca.directory), str(tmp_path), w, 10) for w in range(4)])
    serials = [s for batch in results for s in batch]
    assert len(serials) == 40 and len(set(serials)) == 40
    index = json.loads((ca.directory / "index.json").read_text())
    assert len(index["certificates"]) == 40


# --- revocation and CRLs ----------------------------------------------------------------------------------


def test_revoke_records_time_and_reason_and_the_crl_lists_it(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")
    good = ca.issue(["good.test"])
    bad = ca.issue(["bad.test"])
    record = ca.revoke(bad.serial, parse_reason("key-compromise"))
    assert record.reason == "keyCompromise" and record.revoked_at is not None
    again = ca.revoke(bad.serial, parse_reason("superseded"))  # idempotent: the first revocation stands
    assert again.reason == "keyCompromise"
    status = ca.status(bad.serial)
    assert status is not None and status.revoked and status.reason == x509.ReasonFlags.key_compromise
    assert ca.status(good.serial) is not None and not ca.status(good.serial).revoked  # type: ignore[union-attr]
    assert ca.status(12345) is None
    first, second = ca.crl(), ca.crl(days=3)
    assert second.next_update_utc is not None
    assert second.next_update_utc - second.last_update_utc == dt.timedelta(days=3)
    numbers = [c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number for c in (first, second)]
    assert numbers[1] == numbers[0] + 1
    entry = second.get_revoked_certificate_by_serial_number(bad.serial)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert second.get_revoked_certificate_by_serial_number(good.serial) is None
    assert second.is_signature_valid(ca.issuer.public_key())  # type: ignore[arg-type]
    assert [r.status(dt.datetime.now(dt.UTC)) for r in ca.records()] == ["valid", "revoked"]


def test_revoking_an_unknown_serial_is_an_error(ca: CertificateAuthority) -> None:
    with pytest.raises(ConfigError, match="was not issued by this CA"):
        ca.revoke(0xDEAD)


@pytest.mark.parametrize("text", ["0A1B", "0a:1b", "serial=0A1B", "0x0a1b"])
def test_parse_serial_accepts_openssl_forms(text: str) -> None:
    assert parse_serial(text) == 0x0A1B
    assert format_serial(0xA1B) == "0A1B"


def test_parse_reason_rejects_unknown_reasons() -> None:
    assert parse_reason("cACompromise") == x509.ReasonFlags.ca_compromise
    with pytest.raises(ConfigError, match="keyCompromise"):
        parse_reason("stolen")


# --- clock skew (the mTLS incident) -------------------------------------------------------------------------


def test_default_backdate_survives_a_verifier_two_minutes_behind(ca: CertificateAuthority, tmp_path: Path) -> None:
    clear_cache()
    lagging = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
    server = ca.issue(["skew.test"], out=tmp_path / "skew").certificate
    client = ca.issue(["c.skew.test"], client=True, out=tmp_path / "cskew").certificate
    assert verify_server_chain([_der(server), _der(ca.issuer)], server_name="skew.test", trust=_trust(ca),
                               now=lagging) == server
    verify_client_chain([_der(client), _der(ca.issuer)], trust=_trust(ca), now=lagging)


def test_certificate_issued_at_now_is_rejected_by_a_verifier_two_minutes_behind(ca: CertificateAuthority,
                                                                                tmp_path: Path) -> None:
    clear_cache()
    lagging = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
    cert = ca.issue(["now.test"], backdate=dt.timedelta(0), out=tmp_path / "now").certificate
    with pytest.raises(CertificateError) as info:
        verify_server_chain([_der(cert), _der(ca.issuer)], server_name="now.test", trust=_trust(ca), now=lagging)
    assert info.value.description == AlertDescription.certificate_expired
    assert "not yet valid (clock skew?)" in info.value.message


# --- CLI ----------------------------------------------------------------------------------------------------


def test_cli_init_issue_list_revoke_crl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "ca"
    assert main(["ca", "init", str(d), "--ocsp-url", OCSP_URL]) == 0
    assert main(["ca", "issue", str(d), "localhost", "127.0.0.1", "--days", "2"]) == 0
    assert main(["ca", "issue", str(d), "web", "--client", "--spiffe", "spiffe://cluster.local/ns/a/sa/web",
                 "--out", str(tmp_path / "web")]) == 0
    assert (d / "issued" / "localhost.pem").is_file() and _mode(d / "issued" / "localhost.key") == 0o600
    capsys.readouterr()
    assert main(["ca", "list", str(d), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["names"], r["profiles"], r["status"]) for r in listed] == [
        (["localhost", "127.0.0.1"], ["server"], "valid"),
        (["web", "spiffe://cluster.local/ns/a/sa/web"], ["client"], "valid")]
    assert main(["ca", "revoke", str(d), str(tmp_path / "web.pem"), "--reason", "keyCompromise"]) == 0
    assert main(["ca", "revoke", str(d), listed[0]["serial"], "--reason", "superseded"]) == 0
    assert main(["ca", "crl", str(d)]) == 0
    capsys.readouterr()
    assert main(["ca", "list", str(d)]) == 0
    table = capsys.readouterr().out
    assert table.count("revoked") == 2 and listed[1]["serial"] in table
    assert main(["ca", "revoke", str(d), "nothex"]) == 2
    assert "not a hexadecimal serial" in capsys.readouterr().err
    assert main(["ca", "issue", str(tmp_path / "nope"), "x.test"]) == 2


def test_an_index_entry_missing_fields_is_one_line_not_a_traceback(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Valid JSON with an entry lacking fields: `ca list` raised TypeError, `ca crl` KeyError."""
    d = tmp_path / "ca"
    assert main(["ca", "init", str(d)]) == 0
    assert main(["ca", "issue", str(d), "localhost"]) == 0
    index = json.loads((d / "index.json").read_text())
    for entry in index["certificates"].values():
        del entry["revoked_at"]
    (d / "index.json").write_text(json.dumps(index))
    capsys.readouterr()
    for command in (["ca", "list", str(d)], ["ca", "crl", str(d)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "is damaged" in err and "revoked_at" in err and "restore it from a backup" in err
        assert err.count("\n") == 1


def test_a_half_made_ca_directory_is_named_as_such_not_sent_round_in_circles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """root.key without ca.json: `ca list` said "create one with `tlskit ca init`" and init said "root.key exists"."""
    d = tmp_path / "ca"
    d.mkdir()
    (d / "root.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    for command in (["ca", "list", str(d)], ["ca", "init", str(d)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "did not finish" in err and "ca init" in err and err.count("\n") == 1


@pytest.mark.parametrize(("name", "says"), [("1.2.3.999", "all-digit label"), ("*.com", "two labels after")])
def test_names_no_client_would_match_are_refused_at_issue(tmp_path: Path, name: str, says: str) -> None:
    """`1.2.3.999` went in as a dNSName and `*.com` as a wildcard for a whole TLD: certificates no client accepts."""
    ca = CertificateAuthority.init(tmp_path / "ca")
    with pytest.raises(ConfigError, match=says):
        ca.issue([name])


# --- checked by OpenSSL --------------------------------------------------------------------------------------


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require("openssl"), *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.interop
def test_openssl_reads_issued_certificates_and_crl(ca: CertificateAuthority, tmp_path: Path) -> None:
    issued = ca.issue(["openssl.test", "127.0.0.1"], client=True, server=True,
                      spiffe="spiffe://cluster.local/ns/default/sa/web", out=tmp_path / "o")
    text = _openssl("x509", "-in", str(issued.chain_path), "-noout", "-text").stdout
    assert "DNS:openssl.test, IP Address:127.0.0.1, URI:spiffe://cluster.local/ns/default/sa/web" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert f"OCSP - URI:{OCSP_URL}" in text and f"URI:{CRL_URL}" in text
    assert "CA:FALSE" in text
    ca.crl()
    crl_text = _openssl("crl", "-in", str(ca.directory / "crl.pem"), "-noout", "-text").stdout
    assert "Issuer: CN = tlskit private CA intermediate" in crl_text and "Next Update:" in crl_text


@pytest.mark.interop
def test_openssl_verify_crl_check_accepts_good_and_rejects_revoked(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", intermediate=True)
    good, bad = ca.issue(["good.test"]), ca.issue(["bad.test"])
    ca.revoke(bad.serial, parse_reason("keyCompromise"))
    ca.crl()
    d = ca.directory

    def verify(issued_path: Path) -> subprocess.CompletedProcess[str]:
        return _openssl("verify", "-crl_check", "-CAfile", str(d / "root.pem"), "-untrusted",
                        str(d / "intermediate.pem"), "-CRLfile", str(d / "crl.pem"), str(issued_path))

    ok = verify(good.chain_path)
    assert ok.returncode == 0 and ": OK" in ok.stdout
    revoked = verify(bad.chain_path)
    assert revoked.returncode != 0 and "certificate revoked" in revoked.stdout + revoked.stderr
    # nginx's ssl_crl checks the whole chain (CRL_CHECK_ALL): crl.pem carries the root's CRL too, else every
    # client was refused with "unable to get certificate CRL"
    for flag in ("-crl_check_all", "-x509_strict"):
        whole = _openssl("verify", "-crl_check_all", flag, "-CAfile", str(d / "root.pem"), "-untrusted",
                         str(d / "intermediate.pem"), "-CRLfile", str(d / "crl.pem"), str(good.chain_path))
        assert whole.returncode == 0 and ": OK" in whole.stdout, whole.stdout + whole.stderr
    again = _openssl("verify", "-crl_check_all", "-CAfile", str(d / "root.pem"), "-untrusted",
                     str(d / "intermediate.pem"), "-CRLfile", str(d / "crl.pem"), str(bad.chain_path))
    assert again.returncode != 0 and "certificate revoked" in again.stdout + again.stderr


@pytest.mark.parametrize("given", ["./nope.pem", "nope.crt", "issued/web"])
def test_cli_revoke_of_a_missing_certificate_file_says_the_file_does_not_exist(
    given: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "'./nope.pem' is not a hexadecimal serial number", as if a serial had been meant."""
    d = tmp_path / "ca"
    assert main(["ca", "init", str(d)]) == 0
    capsys.readouterr()
    assert main(["ca", "revoke", str(d), given]) == 2
    assert capsys.readouterr().err == f"tlskit ca revoke: error: {given}: no such certificate file\n"
    assert main(["ca", "revoke", str(d), "zz99"]) == 2  # neither a serial nor a file: both are said
    err = capsys.readouterr().err
    assert "'zz99' is not a hexadecimal serial number" in err and "no certificate file of that name" in err
    assert main(["ca", "revoke", str(d), str(d / "ca.json")]) == 2
    assert "ca.json: not a PEM or DER certificate" in capsys.readouterr().err


def test_cli_revoke_accepts_a_der_certificate_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "ca"
    assert main(["ca", "init", str(d)]) == 0
    assert main(["ca", "issue", str(d), "localhost"]) == 0
    cert = x509.load_pem_x509_certificates((d / "issued" / "localhost.pem").read_bytes())[0]
    (tmp_path / "leaf.der").write_bytes(_der(cert))
    assert main(["ca", "revoke", str(d), str(tmp_path / "leaf.der")]) == 0
    assert f"revoked serial {format_serial(cert.serial_number)}" in capsys.readouterr().out


def test_cli_ocsp_serve_on_a_port_in_use_names_the_address_port_and_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed only "error: [Errno 98] Address already in use"; `tlskit serve` names where and what to do."""
    import socket

    d = tmp_path / "ca"
    assert main(["ca", "init", str(d)]) == 0
    capsys.readouterr()
    with socket.socket() as busy:
        for port in range(47800, 47900):  # the loopback ports these tests may listen on
            try:
                busy.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        busy.listen()
        assert main(["ca", "ocsp-serve", str(d), "--port", str(port)]) == 2
    assert capsys.readouterr().err == (
        f"tlskit ca ocsp-serve: error: cannot listen on 127.0.0.1 port {port}: Address already in use "
        "(another process listens there: `ss -ltnp` names it; or choose another port)\n")


def test_a_serial_with_a_leading_zero_is_printed_the_same_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """`ca list` printed 09084D0BF7DE…, the stapling log and probe 9084D0BF7DE…: grepping one for the other failed."""
    import logging

    from tlskit.analysis.certinfo import describe_certificate
    from tlskit.io.common import peer_cert_dict
    from tlskit.pki.stapling import StapleCache

    d = tmp_path / "ca"
    assert main(["ca", "init", str(d)]) == 0
    for attempt in range(400):  # a random 159-bit serial has an odd number of hex digits one time in 16
        assert main(["ca", "issue", str(d), f"h{attempt}.test"]) == 0
        issued = capsys.readouterr().out
        cert = x509.load_pem_x509_certificates((d / "issued" / f"h{attempt}.test.pem").read_bytes())[0]
        if len(f"{cert.serial_number:X}") % 2:
            break
    else:
        pytest.fail("no serial with a leading zero in 400 certificates")
    shown = format_serial(cert.serial_number)
    assert shown.startswith("0") and f"issued serial {shown}," in issued
    assert main(["ca", "list", str(d), "--json"]) == 0
    assert shown in [r["serial"] for r in json.loads(capsys.readouterr().out)]
    caplog.set_level(logging.INFO, "tlskit.pki.stapling")
    assert StapleCache(background=False).refresh([_der(cert)]) is None  # no OCSP URL: says so, naming the serial
    assert f"(serial {shown})" in caplog.text
    now = dt.datetime.now(dt.UTC)
    assert describe_certificate(_der(cert), now)["serial"] == shown == peer_cert_dict(_der(cert))["serialNumber"]
    assert format_serial(-0xABC) == "-0ABC"
