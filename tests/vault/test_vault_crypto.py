"""Behaviour of the vault's crypto core: versioned AES-256-GCM, sealed boxes, masked secret types.

Pure functions, no database: every test runs in milliseconds. Tampering is exhaustive where it is
cheap (every single-bit flip of a short ciphertext), because "most flips fail" is not the promise.
"""

import copy
import logging
import pickle

import pytest

from secrets_vault import crypto
from secrets_vault.crypto import CiphertextError, SecretBytes, SecretStr

pytestmark = pytest.mark.claim("envelope-encryption")

AAD = crypto.canonical_aad({"owner": "7f9c0a52-0000-4000-8000-000000000001", "secret": "42", "purpose": "imap"})
PLAINTEXT = b"imap password: hunter2"


@pytest.fixture
def key():
    return crypto.generate_key()


@pytest.fixture
def keypair():
    return crypto.generate_sealing_keypair()


def bit_flips(blob: bytes):
    """Every copy of blob with exactly one bit inverted."""
    for index in range(len(blob)):
        for bit in range(8):
            mutated = bytearray(blob)
            mutated[index] ^= 1 << bit
            yield index, bit, bytes(mutated)


# --- versioned AES-256-GCM ---------------------------------------------------------------------


def test_round_trip_and_header(key):
    blob = crypto.encrypt(key, PLAINTEXT, aad=AAD, key_version=7)
    assert crypto.decrypt(key, blob, aad=AAD) == PLAINTEXT
    assert crypto.parse_header(blob) == crypto.Header(format_version=crypto.FORMAT_VERSION, key_version=7)
    expected_size = crypto.HEADER_SIZE + crypto.NONCE_SIZE + len(PLAINTEXT) + crypto.TAG_SIZE
    assert len(blob) == expected_size
    assert PLAINTEXT not in blob


def test_empty_plaintext_round_trips(key):
    assert crypto.decrypt(key, crypto.encrypt(key, b"", aad=AAD, key_version=1), aad=AAD) == b""


def test_nonces_are_fresh_each_time(key):
    blobs = {crypto.encrypt(key, PLAINTEXT, aad=AAD, key_version=1) for _ in range(50)}
    assert len(blobs) == 50
    assert len({crypto.split_ciphertext(blob)[1] for blob in blobs}) == 50


def test_wrong_aad_fails(key):
    blob = crypto.encrypt(key, PLAINTEXT, aad=AAD, key_version=1)
    other_owner = crypto.canonical_aad({"owner": "someone-else", "secret": "42", "purpose": "imap"})
    for aad in (other_owner, b"", AAD + b" "):
        with pytest.raises(CiphertextError):
            crypto.decrypt(key, blob, aad=aad)


def test_wrong_key_fails(key):
    blob = crypto.encrypt(key, PLAINTEXT, aad=AAD, key_version=1)
    with pytest.raises(CiphertextError):
        crypto.decrypt(crypto.generate_key(), blob, aad=AAD)


def test_every_single_bit_flip_fails(key):
    blob = crypto.encrypt(key, PLAINTEXT, aad=AAD, key_version=3)
    for index, bit, mutated in bit_flips(blob):
        with pytest.raises(CiphertextError):
            crypto.decrypt(key, mutated, aad=AAD)
            pytest.fail(f"flipping bit {bit} of byte {index} still decrypted")


def test_key_version_is_authenticated(key):
    # Relabelling a ciphertext as another key version (to confuse rotation) must not verify.
    blob = crypto.encrypt(key, PLAINTEXT, aad=AAD, key_version=1)
    relabelled = crypto.build_header(2) + blob[crypto.HEADER_SIZE:]
    assert crypto.parse_header(relabelled).key_version == 2
    with pytest.raises(CiphertextError):
        crypto.decrypt(key, relabelled, aad=AAD)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_format_version_fails(key, version):
    blob = bytearray(crypto.encrypt(key, PLAINTEXT, aad=AAD, key_version=1))
    blob[0] = version
    with pytest.raises(CiphertextError, match="unknown ciphertext format version"):
        crypto.parse_header(bytes(blob))
    with pytest.raises(CiphertextError):
        crypto.decrypt(key, bytes(blob), aad=AAD)


@pytest.mark.parametrize("length", [0, 1, crypto.HEADER_SIZE, crypto.HEADER_SIZE + crypto.NONCE_SIZE + 15])
def test_truncated_ciphertext_fails(key, length):
    blob = crypto.encrypt(key, PLAINTEXT, aad=AAD, key_version=1)
    with pytest.raises(CiphertextError, match="too short"):
        crypto.decrypt(key, blob[:length], aad=AAD)


def test_error_messages_never_carry_key_or_plaintext(key):
    blob = crypto.encrypt(key, PLAINTEXT, aad=AAD, key_version=1)
    with pytest.raises(CiphertextError) as caught:
        crypto.decrypt(key, blob[:-1] + bytes([blob[-1] ^ 1]), aad=AAD)
    text = str(caught.value) + repr(caught.value)
    for secret in (key, PLAINTEXT):
        assert secret.hex() not in text
        assert repr(secret) not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_decrypt_with_picks_the_key_version(key):
    old, new = crypto.generate_key(), key
    keys = {1: old, 2: new}
    old_blob = crypto.encrypt(old, b"old", aad=AAD, key_version=1)
    new_blob = crypto.encrypt(new, b"new", aad=AAD, key_version=2)
    assert crypto.decrypt_with(keys, old_blob, aad=AAD) == b"old"
    assert crypto.decrypt_with(keys.__getitem__, new_blob, aad=AAD) == b"new"
    with pytest.raises(CiphertextError, match="no key for key version 3"):
        crypto.decrypt_with(keys, crypto.encrypt(new, b"x", aad=AAD, key_version=3), aad=AAD)


def test_bad_arguments_are_programming_errors(key):
    with pytest.raises(ValueError):
        crypto.encrypt(key[:16], PLAINTEXT, aad=AAD, key_version=1)
    with pytest.raises(ValueError):
        crypto.encrypt(key, PLAINTEXT, aad=AAD, key_version=-1)
    with pytest.raises(TypeError):
        crypto.encrypt(key, PLAINTEXT, aad="owner=1", key_version=1)


def test_canonical_aad_is_order_independent_and_unambiguous():
    assert crypto.canonical_aad({"b": "2", "a": "1"}) == crypto.canonical_aad({"a": "1", "b": "2"})
    assert crypto.canonical_aad({"a": "1,b:2"}) != crypto.canonical_aad({"a": "1", "b": "2"})
    with pytest.raises(TypeError):
        crypto.canonical_aad({"owner": 1})


# --- sealed boxes ------------------------------------------------------------------------------


def test_seal_round_trip(keypair):
    sealed = crypto.seal(keypair.public, PLAINTEXT, aad=AAD)
    assert sealed[0] == crypto.SEAL_VERSION
    assert PLAINTEXT not in sealed
    assert crypto.unseal(keypair.private, sealed, aad=AAD) == PLAINTEXT
    assert crypto.unseal(keypair.private.reveal(), sealed, aad=AAD) == PLAINTEXT


def test_each_seal_uses_a_fresh_ephemeral_key(keypair):
    first, second = (crypto.seal(keypair.public, PLAINTEXT, aad=AAD) for _ in range(2))
    assert first[1:33] != second[1:33]
    assert first != second


def test_unseal_with_wrong_private_key_fails(keypair):
    sealed = crypto.seal(keypair.public, PLAINTEXT, aad=AAD)
    with pytest.raises(CiphertextError):
        crypto.unseal(crypto.generate_sealing_keypair().private, sealed, aad=AAD)


def test_unseal_with_wrong_aad_fails(keypair):
    sealed = crypto.seal(keypair.public, PLAINTEXT, aad=AAD)
    with pytest.raises(CiphertextError):
        crypto.unseal(keypair.private, sealed, aad=crypto.canonical_aad({"owner": "other", "purpose": "imap"}))


def test_every_single_bit_flip_of_a_sealed_box_fails(keypair):
    private = crypto.load_private_key(keypair.private)  # parse once: 776 flips stay fast
    sealed = crypto.seal(keypair.public, b"short secret", aad=AAD)
    for index, bit, mutated in bit_flips(sealed):
        with pytest.raises(CiphertextError):
            crypto.unseal(private, mutated, aad=AAD)
            pytest.fail(f"flipping bit {bit} of byte {index} still unsealed")


def test_sealed_box_cannot_be_opened_as_a_plain_ciphertext(keypair, key):
    sealed = crypto.seal(keypair.public, PLAINTEXT, aad=AAD)
    with pytest.raises(CiphertextError):
        crypto.decrypt(key, sealed, aad=AAD)


def test_unknown_seal_version_and_truncation_fail(keypair):
    sealed = crypto.seal(keypair.public, PLAINTEXT, aad=AAD)
    with pytest.raises(CiphertextError, match="unknown sealed box version"):
        crypto.unseal(keypair.private, b"\x02" + sealed[1:], aad=AAD)
    with pytest.raises(CiphertextError, match="too short"):
        crypto.unseal(keypair.private, sealed[:40], aad=AAD)


def test_low_order_points_are_refused(keypair):
    zero_point = bytes(32)
    with pytest.raises(ValueError):
        crypto.seal(zero_point, PLAINTEXT, aad=AAD)
    sealed = crypto.seal(keypair.public, PLAINTEXT, aad=AAD)
    with pytest.raises(CiphertextError):
        crypto.unseal(keypair.private, sealed[:1] + zero_point + sealed[33:], aad=AAD)


def test_keys_survive_base64_for_environment_variables(keypair):
    private_text, public_text = crypto.encode_key(keypair.private), crypto.encode_key(keypair.public)
    private = crypto.decode_key(private_text + "\n")
    assert crypto.public_key_bytes(private) == crypto.decode_key(public_text) == keypair.public
    sealed = crypto.seal(crypto.decode_key(public_text), PLAINTEXT, aad=AAD)
    assert crypto.unseal(private, sealed, aad=AAD) == PLAINTEXT


@pytest.mark.parametrize("text", ["not base64!!", "c2hvcnQ=", ""])
def test_decode_key_errors_do_not_echo_the_input(text):
    with pytest.raises(ValueError) as caught:
        crypto.decode_key(text)
    assert not text or text not in str(caught.value)


def test_keypair_repr_hides_the_private_key(keypair):
    text = repr(keypair)
    assert crypto.encode_key(keypair.private) not in text
    assert "SecretBytes('****')" in text


# --- secrets that never print ------------------------------------------------------------------

CANARY = "Canary-Vault-Password-9431"


def _renderings(secret):
    return [
        repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret!s}", f"{secret:>60}", f"{secret:x}",
        "%s" % secret, "%r" % (secret,), "{}".format(secret),  # noqa: UP031, UP032 - the formats logging uses
        str([secret]), str({"password": secret}),
        repr(ValueError(secret)), str(ValueError("failed", secret)),
    ]


def test_secret_str_is_masked_everywhere():
    secret = SecretStr(CANARY)
    assert repr(secret) == "SecretStr('****')"
    assert str(secret) == "****"
    for text in _renderings(secret):
        assert CANARY not in text
    assert secret.reveal() == CANARY


def test_secret_bytes_is_masked_and_wipes():
    raw = CANARY.encode()
    secret = SecretBytes(raw)
    assert repr(secret) == "SecretBytes('****')"
    for text in _renderings(secret):
        assert CANARY not in text and raw.hex() not in text
    assert secret.reveal() == raw
    secret.wipe()
    assert secret.reveal() == bytes(len(raw))


def test_secrets_never_reach_log_output(caplog):
    logger = logging.getLogger("aiemaily.test.vault")
    secret = SecretStr(CANARY)
    with caplog.at_level(logging.DEBUG, logger="aiemaily.test.vault"):
        logger.info("login with %s", secret)
        logger.info("login with %r", secret)
        logger.info(f"f-string {secret}")
        logger.warning("structured", extra={"password": secret})
        try:
            raise RuntimeError(secret)
        except RuntimeError:
            logger.exception("failed for %s", secret)
    formatter = logging.Formatter("%(message)s %(password)s", defaults={"password": ""})
    output = caplog.text + "".join(formatter.format(record) for record in caplog.records)
    assert "****" in output
    assert CANARY not in output


def test_secrets_compare_in_constant_time_and_are_not_hashable():
    assert SecretStr(CANARY) == SecretStr(CANARY)
    assert SecretStr(CANARY) != SecretStr(CANARY + "x")
    assert SecretStr(CANARY) != CANARY  # comparing to the raw value must be deliberate: reveal()
    assert SecretBytes(b"k") == SecretBytes(b"k")
    with pytest.raises(TypeError):
        hash(SecretStr(CANARY))


def test_secrets_refuse_pickling_so_they_cannot_ride_a_broker():
    for secret in (SecretStr(CANARY), SecretBytes(CANARY.encode())):
        with pytest.raises(TypeError):
            pickle.dumps(secret)
        with pytest.raises(TypeError):
            copy.deepcopy(secret)


def test_zero_overwrites_in_place():
    buffer = bytearray(b"data key material")
    view_before = memoryview(buffer)
    crypto.zero(buffer)
    assert buffer == bytearray(len(b"data key material"))
    assert view_before.tobytes() == bytes(len(buffer))
    view_before.release()
    crypto.zero(bytearray())  # nothing to do, no error
    with pytest.raises(TypeError):
        crypto.zero(b"immutable")  # type: ignore[arg-type]
