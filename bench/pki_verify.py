"""Cost of certificate verification and of mutual TLS (issue 5 item 9).

    python bench/pki_verify.py [-n 200] [--rounds 7] [--json]

(a) chain: a 3-certificate chain (root → intermediate → leaf, ECDSA P-256, from ``tlskit.pki.ca``), the
    server sending leaf + intermediate. Per call, median over interleaved rounds:
      - cryptography: parse both DER certificates, build the WebPKI verifier, verify (what
        ``verify_server_chain`` / ``verify_client_chain`` must do at the least; the ``Store`` is built once,
        as ``TrustStore`` does);
      - tlskit uncached: ``verify_*_chain`` after ``clear_cache()`` (every call verifies);
      - tlskit cached: ``verify_*_chain`` on the same chain again (a verdict-cache hit).
    Target (issue 5): tlskit uncached within 1.2x of cryptography.
(b) handshake: full TLS 1.3 handshakes between two in-memory ``Connection``s (x25519, AES-128-GCM, ECDSA
    P-256 certificates from the same CA), plain (server authenticated) vs mutual TLS (``ClientAuth(mode=
    "required")``, the client sending leaf + intermediate); with the verdict cache warm (a client and
    server that see the same peers again) and cold (``clear_cache()`` before each handshake).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common as C

perf = time.perf_counter


def timed(fn: Callable[[], object], n: int) -> Callable[[], float]:
    """A runner: ``fn`` called ``n`` times; returns seconds per call."""

    def run() -> float:
        gc.disable()
        try:
            t = perf()
            for _ in range(n):
                fn()
            return (perf() - t) / n
        finally:
            gc.enable()

    return run


def chain_runners(ca: Any, server: Any, client: Any) -> dict[str, Callable[[], object]]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.verification import PolicyBuilder

    from tlskit.pki.verify import TrustStore, clear_cache, verify_client_chain, verify_server_chain

    trust = TrustStore(roots=(ca.root,))
    store = trust.store
    inter_der = ca.issuer.public_bytes(Encoding.DER)
    server_chain = [server.certificate.public_bytes(Encoding.DER), inter_der]
    client_chain = [client.certificate.public_bytes(Encoding.DER), inter_der]
    name = x509.DNSName("localhost")
    load = x509.load_der_x509_certificate

    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def crypto_server() -> object:
        leaf, inter = load(server_chain[0]), load(server_chain[1])
        verifier = PolicyBuilder().store(store).time(now()).max_chain_depth(8).build_server_verifier(name)
        return verifier.verify(leaf, [inter])

    def crypto_client() -> object:
        leaf, inter = load(client_chain[0]), load(client_chain[1])
        verifier = PolicyBuilder().store(store).time(now()).max_chain_depth(8).build_client_verifier()
        return verifier.verify(leaf, [inter])

    def ours_server() -> object:
        return verify_server_chain(server_chain, server_name="localhost", trust=trust, now=now())

    def ours_client() -> object:
        return verify_client_chain(client_chain, trust=trust, now=now())

    def uncached(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            clear_cache()
            return fn()

        return run

    return {
        "server cryptography": crypto_server,
        "server uncached": uncached(ours_server),
        "server cached": ours_server,
        "client cryptography": crypto_client,
        "client uncached": uncached(ours_client),
        "client cached": ours_client,
    }


def handshake_runners(ca: Any, server: Any, client: Any) -> dict[str, Callable[[], object]]:
    from tlskit.config import CertifiedKey, ClientAuth, ClientConfig, ServerConfig
    from tlskit.connection import Connection
    from tlskit.enums import CipherSuite, NamedGroup
    from tlskit.pki.verify import TrustStore, clear_cache

    trust = TrustStore(roots=(ca.root,))
    common: dict[str, Any] = {"cipher_suites": (CipherSuite.TLS_AES_128_GCM_SHA256,), "groups": (NamedGroup.x25519,)}
    server_key = CertifiedKey.from_pem_files(server.chain_path, server.key_path)
    client_key = CertifiedKey.from_pem_files(client.chain_path, client.key_path)
    plain = (ClientConfig(server_name="localhost", trust=trust, **common),
             ServerConfig(certificates=(server_key,), **common))
    mutual = (ClientConfig(server_name="localhost", trust=trust, certificate=client_key, **common),
              ServerConfig(certificates=(server_key,), client_auth=ClientAuth(mode="required", trust=trust),
                           **common))

    def handshake(configs: tuple[ClientConfig, ServerConfig], cold: bool) -> Callable[[], object]:
        ccfg, scfg = configs

        def run() -> object:
            if cold:
                clear_cache()
            c, s = Connection(ccfg), Connection(scfg)
            c.start()
            s.receive_data(c.data_to_send())
            c.receive_data(s.data_to_send())
            s.receive_data(c.data_to_send())
            c.data_to_send()
            s.data_to_send()
            c.events()
            if not (s.handshake_complete and c.handshake_complete):
                raise RuntimeError("handshake did not complete")
            return s.events()

        return run

    return {
        "plain warm": handshake(plain, False),
        "mTLS warm": handshake(mutual, False),
        "plain cold": handshake(plain, True),
        "mTLS cold": handshake(mutual, True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="calls per sample (default 200)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved samples per variant (default 7)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    args = parser.parse_args()

    sys.path.insert(0, str(C.ROOT / "src"))
    from cryptography import __version__ as crypto_version

    from tlskit.pki.ca import CertificateAuthority

    tmp = Path(tempfile.mkdtemp(prefix="tlskit-bench-pki-"))
    ca = CertificateAuthority.init(tmp / "ca", intermediate=True)
    server = ca.issue(["localhost", "127.0.0.1"], days=30, out=tmp / "server")
    client = ca.issue([], client=True, spiffe="spiffe://cluster.local/ns/default/sa/web", days=30, out=tmp / "client")

    chains = chain_runners(ca, server, client)
    handshakes = handshake_runners(ca, server, client)
    for fn in [*chains.values(), *handshakes.values()]:  # warm up (imports, caches of the Python runtime)
        fn()
    chain_times = {k: C.median(v) for k, v in
                   C.interleaved({k: timed(fn, args.n) for k, fn in chains.items()}, args.rounds).items()}
    hs_n = max(1, args.n // 4)
    hs_times = {k: C.median(v) for k, v in
                C.interleaved({k: timed(fn, hs_n) for k, fn in handshakes.items()}, args.rounds).items()}

    ratios = {
        side: {
            "uncached/cryptography": chain_times[f"{side} uncached"] / chain_times[f"{side} cryptography"],
            "cached/cryptography": chain_times[f"{side} cached"] / chain_times[f"{side} cryptography"],
        }
        for side in ("server", "client")
    }
    hs_ratios = {temp: hs_times[f"mTLS {temp}"] / hs_times[f"plain {temp}"] for temp in ("warm", "cold")}
    if args.json:
        C.emit_json({"cryptography": crypto_version, "n": args.n, "rounds": args.rounds,
                     "chain_seconds": chain_times, "chain_ratios": ratios,
                     "handshake_seconds": hs_times, "handshake_ratios": hs_ratios})
        return

    rows = []
    for side, label in (("server", "verify_server_chain (name localhost)"), ("client", "verify_client_chain")):
        base = chain_times[f"{side} cryptography"]
        rows.append([label, f"{base * 1e6:.1f}", f"{chain_times[f'{side} uncached'] * 1e6:.1f}",
                     C.fmt_ratio(ratios[side]["uncached/cryptography"]),
                     f"{chain_times[f'{side} cached'] * 1e6:.1f}", C.fmt_ratio(ratios[side]["cached/cryptography"])])
    C.print_table(
        f"3-certificate chain verification, µs per call (median of {args.rounds} x {args.n}; "
        f"cryptography {crypto_version})",
        ["chain", "cryptography", "tlskit uncached", "ratio", "tlskit cached", "ratio"],
        rows,
        ["cryptography = parse 2 DER certificates + build the WebPKI verifier + verify (Store built once)",
         "target: tlskit uncached within 1.20x of cryptography"],
    )
    rows = []
    for temp in ("warm", "cold"):
        plain_t, mtls_t = hs_times[f"plain {temp}"], hs_times[f"mTLS {temp}"]
        rows.append([f"verdict cache {temp}", f"{plain_t * 1e3:.3f}", f"{1 / plain_t:.0f}", f"{mtls_t * 1e3:.3f}",
                     f"{1 / mtls_t:.0f}", C.fmt_ratio(hs_ratios[temp])])
    C.print_table(
        f"Full handshake, in-memory Connection pair (median of {args.rounds} x {hs_n})",
        ["", "plain ms", "plain hs/s", "mTLS ms", "mTLS hs/s", "mTLS/plain"],
        rows,
        ["mTLS adds: CertificateRequest, the client's Certificate + CertificateVerify (ECDSA P-256 sign), and "
         "the server's chain validation and signature check",
         "cold: clear_cache() before each handshake, so both chains are verified every time"],
    )


if __name__ == "__main__":
    main()
