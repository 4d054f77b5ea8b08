"""Redaction before mail text leaves for a third-party model (mail/assistant/redaction.py).

Written the way people write these values in mail: an IBAN followed by the BIC or a word in capitals,
in lower case, without spaces; a card number followed by its security code or preceded by a country
prefix. Each must be removed; a number that fails its checksum must stay readable; a switched-off
category must be left alone.
"""

import pytest

from mail.assistant.redaction import Policy, redact

IBAN_DE = "DE89 3704 0044 0532 0130 00"
IBAN_GB = "GB82 WEST 1234 5698 7654 32"
CARD = "4111 1111 1111 1111"


@pytest.mark.parametrize("text,ibans", [
    (f"IBAN: {IBAN_DE}", 1),
    (f"IBAN {IBAN_DE} BIC COBADEFFXXX", 1),
    (f"Pay to {IBAN_DE.replace(' ', '')} ASAP", 1),
    (f"iban {IBAN_DE.lower()}", 1),
    (f"{IBAN_GB} THANKS", 1),
    (f"AB12 CD34 {IBAN_DE}", 1),  # a code in front must not hide the IBAN after it
    (f"first {IBAN_DE}, second {IBAN_GB}.", 2),
])
def test_every_written_form_of_an_iban_is_removed(text, ibans):
    redacted, count = redact(text, Policy())
    compact = redacted.replace(" ", "").upper()
    assert "370400440532013000" not in compact and "12345698765432" not in compact, redacted
    assert redacted.count("[IBAN removed]") == ibans == count
    # What surrounds it stays readable.
    for word in ("BIC COBADEFFXXX", "ASAP", "THANKS", "first", "second"):
        if word in text:
            assert word in redacted


@pytest.mark.parametrize("text", [
    f"Card {CARD} 123",  # number and security code
    f"card {CARD} 12 27",  # number and expiry
    f"Tel 0044 {CARD}",  # a prefix in front
    f"{CARD.replace(' ', '-')}",
    f"{CARD}, cvv 123",
    "Amex 3782 822463 10005 exp 0127",
])
def test_a_card_number_next_to_other_digits_is_removed(text):
    redacted, count = redact(text, Policy())
    digits = "".join(ch for ch in redacted if ch.isdigit())
    assert "4111111111111111" not in digits and "378282246310005" not in digits, redacted
    assert "[card number removed]" in redacted and count == 1


@pytest.mark.parametrize("text", [
    "Order 4111 1111 1111 1112 shipped",  # fails Luhn
    "IBAN DE89 3704 0044 0532 0130 02",  # fails mod 97 (and no card inside passes Luhn)
    "Tracking 1Z999AA10123456784 today",
    "Invoice 2026-11-30 total 1234.56",
])
def test_numbers_that_fail_their_checksum_stay_readable(text):
    assert redact(text, Policy()) == (text, 0)


def test_a_switched_off_category_is_left_alone():
    text = f"IBAN {IBAN_DE} BIC COBADEFFXXX, card {CARD} 123, password: hunter2"
    redacted, count = redact(text, Policy(cards=False, ibans=False, codes=False, passwords=False))
    assert (redacted, count) == (text, 0)
    redacted, count = redact(text, Policy(cards=False, passwords=False))
    assert "[IBAN removed]" in redacted and CARD in redacted and "hunter2" in redacted and count == 1


def test_a_long_line_of_digits_and_letters_is_quick_and_leaves_no_card():
    # Bounded work: many short groups, and an IBAN-shaped prefix followed by a very long word.
    text = " ".join(["12"] * 20000) + f" {CARD} " + "DE89" + "A" * 5000
    redacted, _ = redact(text, Policy())
    assert CARD not in redacted and "[card number removed]" in redacted


@pytest.mark.parametrize("text,secret", [
    ("Your OTP is 4829", "4829"),
    ("G-482913 is your Google verification code.", "482913"),  # Google's own format
    ("Your code: 482-913", "482-913"),
    ("Your one-time passcode is 48 29 13", "48 29 13"),
    ("Your verification code\r\n\r\n  482913\r\n", "482913"),  # an HTML mail as text: the code on its own line
    ("Your code: X7K9P2", "X7K9P2"),  # letters and digits
    ("Your sign-in code is K4M-9QZ.", "K4M-9QZ"),
    ("Verification code\n\n  7QX2M9\n", "7QX2M9"),
])
def test_one_time_codes_in_the_forms_services_send_are_removed(text, secret):
    redacted, count = redact(text, Policy())
    assert secret not in redacted and "[code removed]" in redacted and count == 1, redacted


@pytest.mark.parametrize("text", [
    "Meeting on 2026-11-30 at 10:30, room 4120.",  # no code word: numbers stay
    "Your verification code is below.\nIt expires soon.\nThanks!\n\nOrder 48291 ships on Friday.",  # too far
    "Call 555-1234 about the code review.",
])
def test_numbers_away_from_a_code_word_stay_readable(text):
    assert redact(text, Policy()) == (text, 0)


@pytest.mark.parametrize("text,secret", [
    ("Username: bob\r\nPassword: Xk7#pq2!\r\n", "Xk7#pq2!"),
    ("Your temporary password is Xk7#pq2! - change it after signing in.", "Xk7#pq2!"),
    ("Your new password is: sunshine", "sunshine"),
    ("pw: hunter2", "hunter2"),
    ("Password - hunter22", "hunter22"),
    ("Dein Passwort lautet Xk7#pq2!", "Xk7#pq2!"),
    ("Your password is 'sunflower' until you change it.", "sunflower"),  # all letters, but quoted
    ("The Wi-Fi password is “tangerine”.", "tangerine"),
    ("The password is Sunflower, keep it safe.", "Sunflower"),  # all letters, capitalised mid-sentence
    ("Your password is sunFlower", "sunFlower"),
])
def test_passwords_in_the_forms_people_write_them_are_removed(text, secret):
    redacted, count = redact(text, Policy())
    assert secret not in redacted and "[password removed]" in redacted and count == 1, redacted


@pytest.mark.parametrize("text", [
    "I forgot my password again, sorry.",
    "The password is correct now.",
    "Reset your password is what the link does.",
    "The password is wrong, try again.",
    "Your code: ABCDEF is not a code, it has no digit.",
])
def test_sentences_about_passwords_stay_readable(text):
    assert redact(text, Policy()) == (text, 0)


def test_the_incremental_checks_agree_with_the_plain_checksums():
    # The scan keeps Luhn and mod 97 incrementally (bounded work); the plain definitions decide.
    import random

    from mail.assistant.redaction import iban_ok, luhn_ok

    rng = random.Random(2026)
    for _ in range(3000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(13, 19)))
        redacted, count = redact(f"ref {digits} end", Policy(codes=False))
        assert (count == 1) == luhn_ok(digits) and (digits in redacted) != luhn_ok(digits), digits
    for _ in range(3000):
        body = "".join(rng.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(11, 30)))
        candidate = rng.choice(["DE", "GB", "FR", "NL"]) + f"{rng.randint(0, 99):02d}" + body
        redacted, count = redact(f"to {candidate}.", Policy(cards=False, codes=False))
        assert (count == 1) == iban_ok(candidate), candidate
    assert iban_ok(IBAN_DE) and luhn_ok(CARD.replace(" ", ""))
