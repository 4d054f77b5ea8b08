"""Redaction before mail text leaves for a third-party model (runs in worker-ai).

What the user has not chosen to share is replaced by a labelled placeholder: card numbers (digit
runs that pass the Luhn check), IBANs (ISO 13616 mod-97 check), one-time codes (4-8 digits,
"482-913", "G-482913", or capitals and digits like "X7K9P2", on or just below a line with words like
"code", "OTP", "verification"), and passwords ("password: …", "your password is 'sunflower'").
Checksums keep false positives down: an order number that fails Luhn stays readable.

The checksum is tried on every way the value can sit inside a longer run, not only on the whole
run: mail writes a card number next to its security code or expiry ("4111 1111 1111 1111 123") and
an IBAN next to the BIC or a word in capitals ("DE89 … 00 BIC COBADEFFXXX"). Checking only the
greedy match let exactly those through, because the longer run fails the checksum as a whole.
"""

import re
from dataclasses import dataclass

# A run of digit groups joined by single spaces or hyphens; a card number is some of its groups.
DIGIT_RUN = re.compile(r"(?<![\d-])\d+(?:[ -]\d+)*(?![\d-])")
DIGIT_GROUP = re.compile(r"\d+")
# Where an IBAN may start, and at most how far it may reach (34 characters and a space per group);
# which prefix of that is the IBAN is decided by the mod-97 check. Any case: mail writes both.
IBAN_START = re.compile(r"(?i)\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,42}")
OTP_CONTEXT = re.compile(
    r"(?i)\b(?:code|otp|one[- ]time|verification|verify|passcode|pin|2fa|two[- ]factor|security code)\b")
# A code as services write it: 4-8 digits, "482-913" / "48 29 13", or Google's "G-482913"; never a
# piece of a date, time, amount or longer number.
OTP = re.compile(r"(?<![\w.,:/-])(?:[A-Z]{1,3}-)?(?:\d{3}[- ]\d{3}|\d{2} \d{2} \d{2}|\d{4,8})(?!\w|[.,:/-]\d)")
# Letter-and-digit codes ("Your code: X7K9P2", "K4M-9QZ"): capitals and digits, at least one of
# each, 5-10 characters with at most one hyphen; only on lines a code word makes eligible.
OTP_ALNUM = re.compile(r"(?<![\w.,:/-])(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])(?=[A-Z0-9]+(?:-[A-Z0-9]+)?(?![\w-]))"
                       r"[A-Z0-9-]{5,11}(?![\w-])")
# HTML mail turned into text puts the code on its own line under "Your verification code": a code
# word makes its own line and the next ones (up to this many non-blank lines) eligible.
OTP_FOLLOWING_LINES = 2
PASSWORD_WORD = r"\b(?:password|passwort|kennwort|mot de passe|contraseña|passphrase|pwd|pw|pass)\b"
# "Password: x", "pw = x", "Password - x", "your password is: x": the rest of the line goes.
PASSWORD_LINE = re.compile(
    r"(?im)^(.*" + PASSWORD_WORD + r"\s*(?:[:=]|-(?=\s)|(?:is|lautet|est|es)\s*[:=])\s*)(\S.*)$")
# "Your temporary password is Xk7#pq2!": the one word after "is", when it looks like a password, so
# "the password is correct" stays readable. A word in quotes is whatever it is ("is 'sunflower'").
PASSWORD_IS = re.compile(r"(?i)(" + PASSWORD_WORD + r"\s+(?:is|lautet|est|es)\s+)(\S+)")
QUOTES = "\"'`‘’“”«»"


def _looks_like_password(match) -> bool:
    raw = match.group(2)
    word = raw.rstrip(".,;:!?)" + QUOTES)
    if raw[:1] in QUOTES and len(word.lstrip(QUOTES)) >= 4:
        return True
    # Six or more characters with a digit, a symbol or a capital letter after the first: English
    # writes the adjective after "is" in lower case ("correct", "wrong"), a chosen password
    # ("Xk7#pq2!", "SunFlower") mostly not. A capitalised word counts too: "is Sunflower" mid-sentence.
    return len(word) >= 6 and (re.search(r"[\d\W_]", word) is not None or re.search(r"[A-Z]", word) is not None)


@dataclass(frozen=True)
class Policy:
    cards: bool = True
    ibans: bool = True
    codes: bool = True
    passwords: bool = True

    @classmethod
    def from_settings(cls, settings_row) -> "Policy":
        if settings_row is None:
            return cls()
        return cls(cards=settings_row.redact_cards, ibans=settings_row.redact_ibans,
                   codes=settings_row.redact_codes, passwords=settings_row.redact_passwords)


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for index, char in enumerate(digits):
        value = int(char)
        if index % 2 == parity:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    value = candidate.replace(" ", "")
    if not 15 <= len(value) <= 34:
        return False
    rearranged = value[4:] + value[:4]
    try:
        number = int("".join(str(int(ch, 36)) for ch in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def redact(text: str, policy: Policy) -> tuple[str, int]:
    """Return the redacted text and how many values were replaced."""
    count = 0

    def sub(pattern, replacement, value, check=None):
        nonlocal count

        def one(match):
            nonlocal count
            if check is not None and not check(match):
                return match.group(0)
            count += 1
            return replacement(match) if callable(replacement) else replacement

        return pattern.sub(one, value)

    if policy.passwords:
        text = sub(PASSWORD_LINE, lambda m: m.group(1) + "[password removed]", text)
        text = sub(PASSWORD_IS, lambda m: m.group(1) + "[password removed]", text, _looks_like_password)
    if policy.ibans:  # before cards: an IBAN's digits can pass Luhn, and its label is the right one
        text, found = _redact_ibans(text)
        count += found
    if policy.cards:
        text, found = _redact_cards(text)
        count += found
    if policy.codes:
        lines, eligible = [], 0
        for line in text.split("\n"):
            if OTP_CONTEXT.search(line):
                eligible = OTP_FOLLOWING_LINES + 1
            if eligible:
                line = sub(OTP, "[code removed]", line)
                line = sub(OTP_ALNUM, "[code removed]", line)
                if line.strip():
                    eligible -= 1
            lines.append(line)
        text = "\n".join(lines)
    return text, count


def _card_spans(run: str):
    """Spans (in `run`) of group-aligned windows of 13-19 digits that pass Luhn, leftmost first,
    the longest at each start. Luhn is kept incrementally for both parities as a window grows, so
    the work is at most 19 digits per group: a mail of a million digits costs a million steps."""
    groups = [(m.start(), m.end()) for m in DIGIT_GROUP.finditer(run)]
    index = 0
    while index < len(groups):
        best, digits, end, even, odd = None, 0, index, 0, 0
        while end < len(groups) and digits + (groups[end][1] - groups[end][0]) <= 19:
            for char in run[groups[end][0]:groups[end][1]]:
                value = ord(char) - 48
                doubled = value * 2 - 9 if value > 4 else value * 2
                # even: the sum if positions 0, 2, 4… are the doubled ones; odd: if 1, 3, 5… are.
                even, odd = (even + doubled, odd + value) if digits % 2 == 0 else (even + value, odd + doubled)
                digits += 1
            # From the right, every second digit is doubled: position i is doubled when i % 2 == len % 2.
            if digits >= 13 and (even if digits % 2 == 0 else odd) % 10 == 0:
                best = end
            end += 1
        if best is None:
            index += 1
            continue
        yield groups[index][0], groups[best][1]
        index = best + 1


def _redact_cards(text: str) -> tuple[str, int]:
    count = 0

    def one(match):
        nonlocal count
        run, out, last = match.group(0), [], 0
        for start, end in _card_spans(run):
            out += [run[last:start], "[card number removed]"]
            last = end
            count += 1
        return "".join(out) + run[last:]

    return DIGIT_RUN.sub(one, text), count


def _iban_end(text: str, start: int, limit: int) -> int | None:
    """The end of the longest IBAN starting at `start` (ending where a word ends), or None. The
    mod-97 remainder is carried along as the candidate grows (ISO 13616: the first four characters
    are checked last), so each start costs one pass over at most `limit - start` characters."""
    head, remainder, length, found = [], 0, 0, None
    for index in range(start, limit):
        char = text[index]
        if char == " ":
            continue
        if not (char.isascii() and char.isalnum()):
            break
        value = int(char, 36)
        length += 1
        if length <= 4:
            head.append(value)
            continue
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
        end = index + 1
        if 15 <= length <= 34 and (end == len(text) or not text[end].isalnum()):
            final = remainder
            for value in head:
                final = (final * (100 if value > 9 else 10) + value) % 97
            if final == 1:
                found = end
    return found


def _redact_ibans(text: str) -> tuple[str, int]:
    out, count, position, copied = [], 0, 0, 0
    while (match := IBAN_START.search(text, position)) is not None:
        start = match.start()
        found = _iban_end(text, start, match.end())  # longest first, never inside "…00ASAP"
        if found is None:
            position = start + 1
            continue
        out += [text[copied:start], "[IBAN removed]"]
        copied = position = found
        count += 1
    return "".join(out) + text[copied:], count
