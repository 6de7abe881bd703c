"""A private file (a TLS or verifier key) readable by group or others is
refused in production and warned of in development (service/keys/file_modes.py)."""

from __future__ import annotations

import pytest

from pinlife.keys.file_modes import FileModeError, check_private_file


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "server-key.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\n")
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_a_file_only_its_owner_may_read_passes(key, mode):
    key.chmod(mode)
    assert check_private_file(key, production=True, what="the TLS private key") is None
    assert check_private_file(key, production=False, what="the TLS private key") is None


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602, 0o610])
def test_production_refuses_a_file_group_or_others_may_use(key, mode):
    key.chmod(mode)
    with pytest.raises(FileModeError) as err:
        check_private_file(key, production=True, what="the TLS private key")
    assert str(err.value) == (f"the TLS private key {key} is accessible by group or others (mode {mode:04o}): chmod 600 {key}")


def test_development_returns_the_warning_instead(key):
    key.chmod(0o644)
    warning = check_private_file(key, production=False, what="the verifier key file")
    assert warning == f"the verifier key file {key} is accessible by group or others (mode 0644): chmod 600 {key}"


def test_a_symbolic_link_is_judged_by_the_file_it_names(key, tmp_path):
    link = tmp_path / "link.pem"
    link.symlink_to(key)
    key.chmod(0o600)
    assert check_private_file(link, production=True, what="the key") is None
    key.chmod(0o644)
    with pytest.raises(FileModeError):
        check_private_file(link, production=True, what="the key")
