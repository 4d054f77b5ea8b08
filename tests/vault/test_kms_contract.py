"""One contract, three KMS backends: local KEK files, a SoftHSM2 token over PKCS#11, AWS KMS (moto).

Every test in TestKmsContract runs against each backend through kms_from_settings, exactly as the
vault worker builds it. Backend-specific guarantees (HSM key attributes, key file permissions)
follow the class. Nothing is mocked: SoftHSM2 and moto's server are real processes/threads.
"""

import os
import stat
import uuid
from dataclasses import dataclass, field

import pkcs11
import pytest
from pkcs11 import Attribute, ObjectClass

from secrets_vault import crypto
from secrets_vault.kms import (
    KmsConfigurationError,
    KmsError,
    KmsUnavailable,
    WrappedKey,
    kms_from_settings,
)
from secrets_vault.kms.local import LocalKms
from tests.harness.kms_fixtures import free_port, moto_server, softhsm_token, softhsm_token_removed

pytestmark = pytest.mark.claim("envelope-encryption")

OWNER = {"owner": "0b9f3c8e-5d1a-4c57-9a53-3f4e8f1c2a10", "purpose": "dek"}
REGION = "eu-west-1"


@dataclass
class Backend:
    """How to build one backend for a test: working settings and settings that must not work."""

    name: str
    settings: dict
    unavailable: dict[str, dict] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()  # configuration values that must never appear in an error


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory):
    with softhsm_token(tmp_path_factory.mktemp("softhsm")) as token:
        yield token


@pytest.fixture(scope="session")
def moto_endpoint():
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    # Fake credentials for moto, and no chance of picking up a real profile or instance role.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _local(request, tmp_path) -> Backend:
    (tmp_path / "empty").mkdir()
    return Backend(
        name="local",
        settings={"backend": "local", "key_dir": str(tmp_path / "kek"), "create": True},
        unavailable={
            "missing key directory": {"backend": "local", "key_dir": str(tmp_path / "missing")},
            "no key file": {"backend": "local", "key_dir": str(tmp_path / "empty")},
        },
    )


def _pkcs11(request, tmp_path) -> Backend:
    token = request.getfixturevalue("softhsm")
    base = {"backend": "pkcs11", "module": token.module, "token_label": token.token_label,
            "user_pin": token.user_pin, "key_label": f"kek-{uuid.uuid4().hex[:12]}"}
    wrong_pin = "wrong-pin-7731"
    return Backend(
        name="pkcs11",
        settings={**base, "create": True},
        unavailable={
            "wrong module path": {**base, "module": str(tmp_path / "libnothere.so")},
            "token missing": {**base, "token_label": "no-such-token"},
            "key missing": {**base, "key_label": "no-such-key"},
            "wrong PIN": {**base, "user_pin": wrong_pin},
        },
        secrets=(token.user_pin, wrong_pin),
    )


def _aws(request, tmp_path) -> Backend:
    endpoint = request.getfixturevalue("moto_endpoint")
    request.getfixturevalue("aws_env")
    base = {"backend": "aws", "key_id": f"alias/kek-{uuid.uuid4().hex[:12]}", "region": REGION,
            "endpoint_url": endpoint}
    return Backend(
        name="aws",
        settings={**base, "create": True},
        unavailable={
            # free_port(): nothing listens there, so the connection is refused at once.
            "endpoint at a closed port": {**base, "endpoint_url": f"http://127.0.0.1:{free_port()}",
                                          "max_attempts": 1, "connect_timeout": 1, "create": True},
            "key missing": {**base, "key_id": "alias/no-such-key"},
        },
    )


BUILDERS = {"local": _local, "pkcs11": _pkcs11, "aws": _aws}


@pytest.fixture(params=sorted(BUILDERS))
def backend(request, tmp_path) -> Backend:
    return BUILDERS[request.param](request, tmp_path)


@pytest.fixture
def kms(backend):
    service = kms_from_settings(backend.settings)
    yield service
    service.close()


def flip(data: bytes, index: int) -> bytes:
    mutated = bytearray(data)
    mutated[index] ^= 0x01
    return bytes(mutated)


def assert_refused(kms, wrapped: WrappedKey, context: dict) -> KmsError:
    """The unwrap fails with KmsError that is not "unavailable" (a retry would not help)."""
    with pytest.raises(KmsError) as caught:
        kms.unwrap(wrapped, context=context)
    assert not isinstance(caught.value, KmsUnavailable), caught.value
    return caught.value


class TestKmsContract:
    def test_round_trip(self, kms, backend):
        dek = crypto.generate_key()
        wrapped = kms.wrap(dek, context=OWNER)
        assert kms.backend == backend.name
        assert isinstance(wrapped.ciphertext, bytes) and dek not in wrapped.ciphertext
        assert wrapped.key_id and wrapped.key_version == kms.key_version
        assert kms.unwrap(wrapped, context=OWNER) == dek
        assert kms.unwrap(wrapped, context=dict(reversed(list(OWNER.items())))) == dek  # order is irrelevant
        again = kms.wrap(dek, context=OWNER)
        assert again.ciphertext != wrapped.ciphertext  # randomised: equal DEKs are not linkable
        assert kms.unwrap(again, context=OWNER) == dek

    def test_wrong_context_fails(self, kms):
        dek = crypto.generate_key()
        wrapped = kms.wrap(dek, context=OWNER)
        for context in (
            {**OWNER, "owner": "someone-else"},
            {**OWNER, "extra": "x"},
            {"owner": OWNER["owner"]},
        ):
            error = assert_refused(kms, wrapped, context)
            assert dek.hex() not in str(error)
        assert kms.unwrap(wrapped, context=OWNER) == dek  # a failed attempt leaves the KMS usable

    def test_context_and_dek_are_required(self, kms):
        with pytest.raises(KmsError):
            kms.wrap(crypto.generate_key(), context={})
        with pytest.raises(KmsError):
            kms.wrap(crypto.generate_key(), context={"owner": 42})
        with pytest.raises(KmsError):
            kms.wrap(b"too short", context=OWNER)

    def test_tampered_wrapped_key_fails(self, kms):
        dek = crypto.generate_key()
        wrapped = kms.wrap(dek, context=OWNER)
        size = len(wrapped.ciphertext)
        for index in (0, 1, crypto.HEADER_SIZE, size // 2, size - 1):
            tampered = WrappedKey(flip(wrapped.ciphertext, index), wrapped.key_id, wrapped.key_version)
            error = assert_refused(kms, tampered, OWNER)
            assert dek.hex() not in str(error)
        for tampered in (
            WrappedKey(wrapped.ciphertext[:-1], wrapped.key_id, wrapped.key_version),
            WrappedKey(wrapped.ciphertext + b"\x00", wrapped.key_id, wrapped.key_version),
            WrappedKey(wrapped.ciphertext, wrapped.key_id, wrapped.key_version + 1),
        ):
            assert_refused(kms, tampered, OWNER)
        assert kms.unwrap(wrapped, context=OWNER) == dek

    def test_unavailable_kms_raises_and_never_falls_back(self, backend, tmp_path):
        assert backend.unavailable
        for case, settings in backend.unavailable.items():
            before = sorted(p.name for p in tmp_path.iterdir())
            with pytest.raises(KmsUnavailable) as caught:
                service = kms_from_settings(settings)
                service.wrap(crypto.generate_key(), context=OWNER)  # only reached if building "worked"
            message = str(caught.value)
            assert message, case
            assert all(secret not in message for secret in backend.secrets), case
            # Nothing was created in its place: no key directory, no key file, no other backend.
            assert sorted(p.name for p in tmp_path.iterdir()) == before, case

    def test_rotation_keeps_old_wrapped_keys_openable(self, kms, backend):
        old_dek, old_version = crypto.generate_key(), kms.key_version
        old = kms.wrap(old_dek, context=OWNER)
        new_version = kms.rotate()
        assert new_version == old_version + 1 == kms.key_version

        new_dek = crypto.generate_key()
        new = kms.wrap(new_dek, context=OWNER)
        assert new.key_version == new_version and old.key_version == old_version
        assert kms.unwrap(old, context=OWNER) == old_dek
        assert kms.unwrap(new, context=OWNER) == new_dek

        assert kms.needs_rewrap(old) and not kms.needs_rewrap(new)
        rewrapped = kms.rewrap(old, context=OWNER)
        assert rewrapped.key_version == new_version
        assert kms.unwrap(rewrapped, context=OWNER) == old_dek
        with pytest.raises(KmsError):
            kms.rewrap(old, context={**OWNER, "owner": "someone-else"})

        # A worker started later (create=False) sees the new version and still opens the old wrap.
        with kms_from_settings({**backend.settings, "create": False}) as restarted:
            assert restarted.key_version == new_version
            assert restarted.unwrap(old, context=OWNER) == old_dek
            assert restarted.unwrap(new, context=OWNER) == new_dek

    def test_wrapped_key_survives_storage_fields(self, kms):
        # The key store persists the three fields separately; rebuilding from them must unwrap.
        dek = crypto.generate_key()
        wrapped = kms.wrap(dek, context=OWNER)
        stored = (bytes(wrapped.ciphertext), str(wrapped.key_id), int(wrapped.key_version))
        assert kms.unwrap(WrappedKey(*stored), context=OWNER) == dek


# --- backend-specific guarantees ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["local", "pkcs11"], indirect=True)
def test_a_wrapped_key_opens_only_under_its_own_kek(kms, backend, tmp_path):
    # (AWS KMS lets any key the caller may use decrypt its own ciphertexts; IAM scopes keys there.)
    other_settings = dict(backend.settings)
    if backend.name == "local":
        other_settings["key_dir"] = str(tmp_path / "other-kek")
    else:
        other_settings["key_label"] = f"other-{uuid.uuid4().hex[:12]}"
    wrapped = kms.wrap(crypto.generate_key(), context=OWNER)
    with kms_from_settings(other_settings) as other:
        assert_refused(other, wrapped, OWNER)


@pytest.fixture
def hsm_kms(request, tmp_path):
    backend = _pkcs11(request, tmp_path)
    with kms_from_settings(backend.settings) as service:
        yield service


def test_pkcs11_key_is_sensitive_and_not_extractable(hsm_kms, softhsm):
    assert hsm_kms.key_attributes() == {
        "SENSITIVE": True, "EXTRACTABLE": False, "ALWAYS_SENSITIVE": True, "NEVER_EXTRACTABLE": True,
        "WRAP": False, "UNWRAP": False, "TOKEN": True,
    }
    hsm_kms.rotate()
    assert hsm_kms.key_attributes(2)["NEVER_EXTRACTABLE"] is True

    # Ask the token directly, not through our code: the value cannot be read, copied out or relaxed.
    token = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.token_label)
    with token.open(rw=True) as session:  # the process is logged in through hsm_kms
        keys = list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: hsm_kms.key_label}))
        assert len(keys) == 2
        for key in keys:
            with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                key[Attribute.VALUE]
            with pytest.raises(pkcs11.exceptions.PKCS11Error):
                key[Attribute.EXTRACTABLE] = True
            with pytest.raises(pkcs11.exceptions.PKCS11Error):
                key.copy({Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False})


def test_pkcs11_key_destroyed_on_the_token_is_unavailable(hsm_kms, softhsm):
    dek = crypto.generate_key()
    wrapped = hsm_kms.wrap(dek, context=OWNER)
    assert hsm_kms.unwrap(wrapped, context=OWNER) == dek  # the key handle is now cached
    token = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.token_label)
    with token.open(rw=True) as session:
        session.get_key(label=hsm_kms.key_label).destroy()
    with pytest.raises(KmsUnavailable, match="version 1"):
        hsm_kms.unwrap(wrapped, context=OWNER)


def test_pkcs11_login_is_shared_per_process_but_the_pin_is_still_checked(hsm_kms, softhsm):
    # PKCS#11 logins are per process: while hsm_kms is logged in, C_Login no longer checks PINs.
    settings = {"backend": "pkcs11", "module": softhsm.module, "token_label": softhsm.token_label,
                "user_pin": softhsm.user_pin, "key_label": hsm_kms.key_label}
    with pytest.raises(KmsUnavailable, match="PIN"):
        kms_from_settings({**settings, "user_pin": "not-the-pin"})
    dek = crypto.generate_key()
    with kms_from_settings(settings) as second:
        wrapped = second.wrap(dek, context=OWNER)
    # Closing the second instance must not log the first one out.
    assert hsm_kms.unwrap(wrapped, context=OWNER) == dek


def test_pkcs11_token_gone_mid_run_fails_clearly_and_the_same_instance_recovers_when_it_returns(
        hsm_kms, softhsm):
    # Two instances in one process, both logged in with cached key handles, as before any outage.
    settings = {"backend": "pkcs11", "module": softhsm.module, "token_label": softhsm.token_label,
                "user_pin": softhsm.user_pin, "key_label": f"kek-{uuid.uuid4().hex[:12]}", "create": True}
    dek = crypto.generate_key()
    with kms_from_settings(settings) as other:
        wrapped, other_wrapped = hsm_kms.wrap(dek, context=OWNER), other.wrap(dek, context=OWNER)
        assert hsm_kms.unwrap(wrapped, context=OWNER) == dek
        with softhsm_token_removed(softhsm):
            # Every call fails as unavailable (retry later), the first on the open session and the
            # next ones through a re-initialised module: never a result, never the PIN in the message.
            for _ in range(3):
                for call in (lambda: hsm_kms.unwrap(wrapped, context=OWNER),
                             lambda: hsm_kms.wrap(dek, context=OWNER)):
                    with pytest.raises(KmsUnavailable) as caught:
                        call()
                    assert softhsm.token_label in str(caught.value)
                    assert softhsm.user_pin not in str(caught.value)
        # Back: the same instances work again, without being rebuilt; a wrap made now opens too.
        assert hsm_kms.unwrap(wrapped, context=OWNER) == dek
        assert hsm_kms.unwrap(hsm_kms.wrap(dek, context=OWNER), context=OWNER) == dek
        assert other.unwrap(other_wrapped, context=OWNER) == dek  # its session was re-initialised away


def test_local_key_files_are_private_and_versioned(tmp_path):
    key_dir = tmp_path / "kek"
    service = LocalKms(key_dir, create=True)
    service.rotate()
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert sorted(p.name for p in key_dir.iterdir()) == ["kek-v1.key", "kek-v2.key"]
    for path in key_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.stat().st_size == 32


def test_local_missing_old_key_file_is_unavailable(tmp_path):
    key_dir = tmp_path / "kek"
    service = LocalKms(key_dir, create=True)
    wrapped = service.wrap(crypto.generate_key(), context=OWNER)
    service.unwrap(wrapped, context=OWNER)
    service.rotate()
    (key_dir / "kek-v1.key").unlink()
    with pytest.raises(KmsUnavailable, match="version 1"):
        LocalKms(key_dir).unwrap(wrapped, context=OWNER)
    with pytest.raises(KmsUnavailable, match="version 1"):
        service.unwrap(wrapped, context=OWNER)  # a running instance does not keep a deleted KEK alive


def test_local_refuses_a_key_file_others_can_read(tmp_path):
    key_dir = tmp_path / "kek"
    LocalKms(key_dir, create=True)
    os.chmod(key_dir / "kek-v1.key", 0o644)  # noqa: S103 - the misconfiguration under test
    with pytest.raises(KmsError, match="0600"):
        LocalKms(key_dir)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"backend": "none"}, "unknown KMS backend"),
        ({"key_dir": "/tmp/x"}, "unknown KMS backend"),
        ({"backend": "local"}, "needs key_dir"),
        ({"backend": "local", "key_dir": "/tmp/x", "creat": True}, "unknown setting"),
        ({"backend": "local", "key_dir": "/tmp/x", "create": "yes"}, "true or false"),
        ({"backend": "pkcs11", "module": "m", "token_label": "t", "key_label": "k"}, "needs user_pin"),
        ({"backend": "pkcs11", "module": "m", "token_label": "t", "key_label": "k", "user_pin": ""}, "non-empty"),
        ({"backend": "aws", "region": REGION}, "needs key_id"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_built(config, message):
    with pytest.raises(KmsConfigurationError, match=message):
        kms_from_settings(config)


def test_settings_errors_never_echo_values():
    pin = "Canary-Pin-5512"
    with pytest.raises(KmsConfigurationError) as caught:
        kms_from_settings({"backend": "pkcs11", "module": "m", "token_label": "t", "key_label": "k",
                           "user_pin": pin, "pin_typo": pin})
    assert pin not in str(caught.value)
    assert "pin_typo" in str(caught.value)


def test_kms_reprs_show_no_secrets(hsm_kms, softhsm):
    assert softhsm.user_pin not in repr(hsm_kms)
    assert softhsm.user_pin not in repr(vars(hsm_kms))
