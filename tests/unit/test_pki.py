"""`pinlife pki init` (service/cli/pki.py) on its own: the files it writes,
their modes, what the certificates say (subjectAltNames, usages, the
terminal id as common name), what a second run keeps, --force, and its
refusals as one line. Accepted by a real server, the CLI, Python gRPC, a
strict (Go-like) TLS client and Node: tests/e2e/test_pki.py."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pinlife.cli.main import main
from pinlife.keys.file_modes import check_private_file

ACCESS = """
[tls]
cert = "pki/server.pem"
key = "pki/server-key.pem"
client_ca = "pki/ca.pem"

[terminals.reader-0001]
role = "medical_reader"

[terminals."naka_counter.01"]
role = "ward_office"
office = "naka-ward-office"

[terminals.kiosk-0042]
role = "convenience_store"
revoked = true
"""


def pki(*args: str) -> None:
    main(["pki", "init", *args])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.pem"))}


@pytest.fixture
def access(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "access.toml"
    path.write_text(ACCESS)
    return path


def test_init_makes_the_ca_the_server_and_each_terminal_with_their_modes(access, tmp_path, capsys):
    pki("pki", "--access", str(access))
    out = tmp_path / "pki"
    keys = ["ca-key.pem", "server-key.pem", "terminals/reader-0001-key.pem", "terminals/naka_counter.01-key.pem"]
    certs = ["ca.pem", "server.pem", "terminals/reader-0001.pem", "terminals/naka_counter.01.pem"]
    assert sorted(snapshot(out)) == sorted(keys + certs)  # the revoked kiosk has none
    for name in keys:
        assert mode(out / name) == 0o600, name
        assert check_private_file(out / name, production=True, what="key") is None  # what `serve` checks in production
        serialization.load_pem_private_key((out / name).read_bytes(), password=None)  # unencrypted PKCS#8
    for name in certs:
        assert mode(out / name) == 0o644, name

    ca, server = cert(out / "ca.pem"), cert(out / "server.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for terminal in ("reader-0001", "naka_counter.01"):
        leaf = cert(out / "terminals" / f"{terminal}.pem")
        leaf.verify_directly_issued_by(ca)
        assert [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [terminal]
        assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH]
        )

    said = capsys.readouterr().out
    assert "skipped  terminal kiosk-0042 (revoked in" in said
    # what to put in [tls], relative to the access file's folder, and how to call
    assert '  cert = "pki/server.pem"\n  key = "pki/server-key.pem"\n  client_ca = "pki/ca.pem"' in said
    assert "is for localhost, 127.0.0.1 (subjectAltNames)" in said
    assert (
        "pinlife --server localhost:50051 --ca pki/ca.pem --cert pki/terminals/reader-0001.pem "
        "--key pki/terminals/reader-0001-key.pem" in said
    )
    assert (
        "grpcurl -cacert pki/ca.pem -cert pki/terminals/reader-0001.pem -key pki/terminals/reader-0001-key.pem "
        "localhost:50051 list" in said
    )


def test_server_names_and_addresses_are_every_one_given(access, tmp_path):
    pki("pki", "--terminal", "t-1", "--server-name", "pinlife.example", "--server-name", "10.0.0.5", "--server-ip", "::1")
    server = cert(tmp_path / "pki" / "server.pem")
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["pinlife.example"]  # no localhost unless given
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("::1")]


def test_a_second_run_keeps_everything_and_adds_what_is_new(access, tmp_path, capsys):
    pki("pki", "--access", str(access), "--server-name", "pinlife.example", "--server-ip", "127.0.0.1")
    before = snapshot(tmp_path / "pki")
    capsys.readouterr()
    pki("pki", "--access", str(access), "--terminal", "added-01")  # no names given: the server's are kept
    after = snapshot(tmp_path / "pki")
    assert {k: v for k, v in after.items() if "added-01" not in k} == before
    assert sorted(set(after) - set(before)) == ["terminals/added-01-key.pem", "terminals/added-01.pem"]
    said = capsys.readouterr().out
    assert "kept     pki/ca-key.pem" in said and "made     pki/terminals/added-01-key.pem" in said
    # other names: the server's certificate is re-issued for its same key
    pki("pki", "--server-name", "other.example")
    again = snapshot(tmp_path / "pki")
    assert again["server-key.pem"] == before["server-key.pem"] and again["server.pem"] != before["server.pem"]
    assert "re-issued: other names" in capsys.readouterr().out


def test_a_key_is_never_overwritten_without_force(access, tmp_path, capsys):
    pki("pki", "--access", str(access))
    out = tmp_path / "pki"
    before = snapshot(out)
    (out / "terminals" / "reader-0001.pem").unlink()  # a lost certificate: issued again for the same key
    pki("pki", "--access", str(access))
    assert snapshot(out)["terminals/reader-0001-key.pem"] == before["terminals/reader-0001-key.pem"]
    cert(out / "terminals" / "reader-0001.pem").verify_directly_issued_by(cert(out / "ca.pem"))
    pki("pki", "--access", str(access), "--force")
    after = snapshot(out)
    assert all(after[name] != before[name] for name in before), "--force: every key and certificate anew"
    assert mode(out / "ca-key.pem") == 0o600


def test_a_kept_key_others_may_read_is_warned_of(access, tmp_path, capsys):
    pki("pki", "--terminal", "t-1")
    (tmp_path / "pki" / "server-key.pem").chmod(0o644)
    capsys.readouterr()
    pki("pki", "--terminal", "t-1")
    assert "warning: the server's private key pki/server-key.pem is accessible by group or others (mode 0644): chmod 600" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--server-name", "bad_name"], "--server-name 'bad_name' is not a DNS name"),
        (["--server-ip", "localhost"], "--server-ip 'localhost' is not an IPv4 or IPv6 address"),
        (["--terminal", "../x"], "--terminal '../x': 1 to 64 of A-Z a-z 0-9 . _ -"),
        (["--access", "missing.toml"], "cannot read --access missing.toml: No such file or directory"),
        (["--access", "empty.toml"], "--access empty.toml has no [terminals.ID] tables"),
        (["--access", "broken.toml"], "--access broken.toml: "),
    ],
)
def test_refusals_are_one_line_and_exit_2(access, tmp_path, capsys, args, message):
    (tmp_path / "empty.toml").write_text('[tls]\ncert = "x"\n')
    (tmp_path / "broken.toml").write_text("[terminals.a\n")
    with pytest.raises(SystemExit) as done:
        pki("pki", *args)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pinlife: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "pki").exists()  # nothing written


def test_a_ca_certificate_without_its_key_is_not_replaced(access, tmp_path, capsys):
    pki("pki", "--terminal", "t-1")
    (tmp_path / "pki" / "ca-key.pem").unlink()
    with pytest.raises(SystemExit) as done:
        pki("pki", "--terminal", "t-1")
    assert done.value.code == 2
    assert "ca.pem exists without its key pki/ca-key.pem" in capsys.readouterr().err


def test_the_terminals_of_a_configuration_file(tmp_path, monkeypatch):
    """pinlife.toml's [access.terminals.*], or the access file it names."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pinlife.toml").write_text('[access.terminals.reader-0001]\nrole = "medical_reader"\n')
    pki("a", "--access", "pinlife.toml")
    assert (tmp_path / "a" / "terminals" / "reader-0001.pem").exists()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "access.toml").write_text(ACCESS)
    (tmp_path / "conf" / "pinlife.toml").write_text('[access]\naccess_file = "access.toml"\n')
    pki("b", "--access", "conf/pinlife.toml")
    assert sorted(p.name for p in (tmp_path / "b" / "terminals").glob("*-key.pem")) == [
        "naka_counter.01-key.pem",
        "reader-0001-key.pem",
    ]


@pytest.mark.parametrize(
    "server, expected",
    [
        ("localhost:50051", ("localhost", 50051)),
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("[::1]:50051", ("::1", 50051)),
        ("dns:///pinlife.example:443", ("pinlife.example", 443)),
        ("::1", ("::1", None)),
        ("pinlife.example", ("pinlife.example", None)),
    ],
)
def test_the_host_and_port_the_hostname_line_names(server, expected):
    from pinlife.cli.client import _host_port

    assert _host_port(server) == expected
