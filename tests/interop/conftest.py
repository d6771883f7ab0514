"""Fixtures for interop tests: a throw-away PKI for localhost, and peers that are always torn down.

Every test collected under tests/interop/ gets the ``interop`` marker, so ``pytest -m "not interop"``
runs the fast set alone. The versions of the third-party tools appear in pytest's report header when
pytest is pointed at this folder (``pytest tests/interop``); .ci/run prints them too, and ``PeerError``
messages name the version of the peer that failed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.certs import KeyType, make_ca, make_leaf, write_pem
from tests.interop.nss import nss_version
from tests.interop.peers import tool_version

_HERE = Path(__file__).parent
_TOOLS = ("openssl", "gnutls-cli", "curl", "tshark", "tcpdump", "nginx", "java")

T = TypeVar("T", bound=contextlib.AbstractContextManager[object])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.interop)


def pytest_report_header(config: pytest.Config) -> list[str]:
    versions = [f"{tool}: {tool_version(tool)}" for tool in _TOOLS]
    return ["interop peers: " + "; ".join([*versions, f"tstclnt/selfserv: {nss_version()}"])]


@dataclass(frozen=True)
class Pki:
    """PEM files for a server named ``localhost`` and ``127.0.0.1``: ``cafile`` trusts ``cert``."""

    cafile: Path
    cert: Path  # leaf then intermediate
    key: Path  # PKCS#8


def make_pki(directory: Path, key_type: KeyType = "ec256") -> Pki:
    """A root, an intermediate and a ``localhost`` leaf of ``key_type``, written into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    root = make_ca("tlskit interop root")
    inter = make_ca("tlskit interop intermediate", issuer=root)
    leaf = make_leaf(inter, names=["localhost", "127.0.0.1"], key_type=key_type)
    cert, key = leaf.write(directory, "server", chain=[inter])
    return Pki(cafile=write_pem(directory / "ca.pem", [root]), cert=cert, key=key)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """An ECDSA P-256 server PKI shared by the session (per xdist worker)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def client_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A client identity (clientAuth EKU, CN "tlskit interop client") from a CA of its own: ``cafile`` is what a
    server must trust."""
    directory = tmp_path_factory.mktemp("client-pki")
    root = make_ca("tlskit interop client root")
    cert, key = make_leaf(root, names=[], common_name="tlskit interop client", client_auth=True,
                          server_auth=False).write(directory, "client")
    return Pki(cafile=write_pem(directory / "ca.pem", [root]), cert=cert, key=key)


@pytest.fixture(scope="session")
def pki_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[KeyType], Pki]:
    """``pki_of("rsa2048")``: a server PKI whose leaf has that key type, made once per session (per worker)."""
    made: dict[KeyType, Pki] = {}

    def get(key_type: KeyType) -> Pki:
        if key_type not in made:
            made[key_type] = make_pki(tmp_path_factory.mktemp(f"pki-{key_type}"), key_type)
        return made[key_type]

    return get


@pytest.fixture
def launch() -> Iterator[Callable[[T], T]]:
    """``server = launch(OpenSSLServer(...))``: enter a peer's context now, exit it at teardown."""
    with contextlib.ExitStack() as stack:

        def enter(peer: T) -> T:
            stack.enter_context(peer)
            return peer

        yield enter
