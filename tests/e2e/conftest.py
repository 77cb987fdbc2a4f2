"""Certificates for the TLS tests, made with openssl: a CA, a server and a client
certificate it signed, and a client certificate from another CA (`stranger`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import BOTH_STORES, require_tool


@pytest.fixture(scope="module", params=BOTH_STORES)
def broker_store(request: pytest.FixtureRequest) -> str:
    """Every broker fixture here runs on LMDB, then on PostgreSQL."""
    return str(request.param)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([require_tool("openssl"), *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(name: str, cwd: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN=conveyor-test-{name}", "-keyout", f"{name}.key",
             "-out", f"{name}.pem", cwd=cwd)  # fmt: skip


def _make_signed(name: str, ca: str, cwd: Path) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=cwd)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", f"{name}.pem",
             cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.pem signs server.pem (127.0.0.1, localhost) and client.pem; other-ca.pem signs
    stranger.pem, a client certificate a broker trusting only ca.pem must refuse."""
    d = tmp_path_factory.mktemp("pki")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _make_ca("ca", d)
    _make_ca("other-ca", d)
    _make_signed("server", "ca", d)
    _make_signed("client", "ca", d)
    _make_signed("stranger", "other-ca", d)
    return d
