"""A header check that follows the Mozilla HTTP Observatory's published scoring rules.

Start at 100, subtract penalties, then add bonuses only when the result is 90 or more (the rules in
MDN's "HTTP Observatory: Tests & Scoring"). Every test's result name is the Observatory's own, so a
report reads like theirs. What cannot be judged from one response is left out and said so: HSTS
preloading needs the public preload list (+5, so 130 here is the local maximum of their 135).
"""

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlsplit

MODIFIERS = {
    "csp-implemented-with-no-unsafe-default-src-none": 10,
    "csp-implemented-with-no-unsafe": 5,
    "csp-implemented-with-unsafe-eval": -10,
    "csp-implemented-with-insecure-scheme": -20,
    "csp-implemented-with-unsafe-inline": -20,
    "csp-not-implemented": -25,
    "cookies-secure-with-httponly-sessions-and-samesite": 5,
    "cookies-not-found": 0,
    "cookies-secure-with-httponly-sessions": 0,
    "cookies-without-secure-flag": -20,
    "cookies-samesite-flag-invalid": -20,
    "cookies-anticsrf-without-samesite-flag": -20,
    "cookies-session-without-httponly-flag": -30,
    "cookies-session-without-secure-flag": -40,
    "cross-origin-resource-sharing-not-implemented": 0,
    "cross-origin-resource-sharing-implemented-with-restricted-access": 0,
    "cross-origin-resource-sharing-implemented-with-universal-access": -50,
    "hsts-implemented-max-age-at-least-six-months": 0,
    "hsts-implemented-max-age-less-than-six-months": -10,
    "hsts-not-implemented": -20,
    "redirection-to-https": 0,
    "redirection-missing": -20,
    "redirection-not-to-https": -20,
    "redirection-off-host-from-http": -5,
    "referrer-policy-private": 5,
    "referrer-policy-not-implemented": 0,
    "referrer-policy-unsafe": -5,
    "sri-implemented-and-all-scripts-loaded-securely": 5,
    "sri-not-implemented-but-all-scripts-loaded-from-secure-origin": 0,
    "sri-not-implemented-but-no-scripts-loaded": 0,
    "sri-not-implemented-and-external-scripts-not-loaded-securely": -50,
    "x-content-type-options-nosniff": 0,
    "x-content-type-options-not-implemented": -5,
    "x-frame-options-implemented-via-csp": 5,
    "x-frame-options-sameorigin-or-deny": 0,
    "x-frame-options-not-implemented": -20,
    "corp-implemented-with-same-origin": 0,
    "corp-implemented-with-same-site": 0,
    "corp-not-implemented": 0,
    "corp-implemented-with-cross-origin": -20,
}
SIX_MONTHS = 15768000
PRIVATE_REFERRER = {"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"}
UNSAFE_REFERRER = {"origin", "origin-when-cross-origin", "unsafe-url"}


@dataclass
class Score:
    results: dict[str, str] = field(default_factory=dict)  # test → result name

    @property
    def value(self) -> int:
        modifiers = [MODIFIERS[result] for result in self.results.values()]
        score = max(0, 100 + sum(m for m in modifiers if m < 0))
        if score >= 90:
            score += sum(m for m in modifiers if m > 0)
        return score

    def penalties(self) -> dict[str, str]:
        return {test: result for test, result in self.results.items() if MODIFIERS[result] < 0}


def _csp(headers) -> str:
    header = headers.get("content-security-policy")
    if not header:
        return "csp-not-implemented"
    policy = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            policy.setdefault(words[0].lower(), [w.lower() for w in words[1:]])
    default = policy.get("default-src", ["*"])
    script = policy.get("script-src", default)
    objects = policy.get("object-src", default)
    if "'unsafe-inline'" in script and not any(w.startswith(("'nonce-", "'sha")) for w in script):
        return "csp-implemented-with-unsafe-inline"
    if any(src in ("data:", "https:", "*", "http:") for src in script + objects):
        return "csp-implemented-with-unsafe-inline"
    if "'unsafe-eval'" in script:
        return "csp-implemented-with-unsafe-eval"
    if any(src.startswith("http:") for values in policy.values() for src in values):
        return "csp-implemented-with-insecure-scheme"
    if default == ["'none'"]:
        return "csp-implemented-with-no-unsafe-default-src-none"
    return "csp-implemented-with-no-unsafe"


def _cookies(set_cookies: list[str]) -> str:
    if not set_cookies:
        return "cookies-not-found"
    all_samesite = True
    for raw in set_cookies:
        name = raw.split("=", 1)[0].strip().lower()
        attributes = {part.split("=", 1)[0].strip().lower(): (part.split("=", 1) + [""])[1].strip().lower()
                      for part in raw.split(";")[1:]}
        session = "session" in name or name in ("sid", "sessid")
        if "secure" not in attributes:
            return "cookies-session-without-secure-flag" if session else "cookies-without-secure-flag"
        if session and "httponly" not in attributes:
            return "cookies-session-without-httponly-flag"
        samesite = attributes.get("samesite")
        if samesite is None:
            if "csrf" in name:
                return "cookies-anticsrf-without-samesite-flag"
            all_samesite = False
        elif samesite not in ("strict", "lax", "none"):
            return "cookies-samesite-flag-invalid"
    if all_samesite:
        return "cookies-secure-with-httponly-sessions-and-samesite"
    return "cookies-secure-with-httponly-sessions"


def _hsts(headers) -> str:
    match = re.search(r"max-age=(\d+)", headers.get("strict-transport-security", ""))
    if not match:
        return "hsts-not-implemented"
    return ("hsts-implemented-max-age-at-least-six-months" if int(match.group(1)) >= SIX_MONTHS
            else "hsts-implemented-max-age-less-than-six-months")


def _referrer(headers) -> str:
    values = [v.strip().lower() for v in headers.get("referrer-policy", "").split(",") if v.strip()]
    if not values:
        return "referrer-policy-not-implemented"
    # Browsers apply the last value they understand.
    return "referrer-policy-private" if values[-1] in PRIVATE_REFERRER else (
        "referrer-policy-unsafe" if values[-1] in UNSAFE_REFERRER else "referrer-policy-not-implemented")


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts: list[dict] = []

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.scripts.append(dict(attrs))


def _sri(html: str, origin: str) -> str:
    parser = _Scripts()
    parser.feed(html)
    if not parser.scripts:
        return "sri-not-implemented-but-no-scripts-loaded"
    same_origin = all(not s.get("src") or s["src"].startswith("/") and not s["src"].startswith("//")
                      or s["src"].startswith(origin + "/") for s in parser.scripts)
    with_integrity = all(s.get("integrity", "").startswith(("sha256-", "sha384-", "sha512-"))
                         for s in parser.scripts if s.get("src"))
    if not same_origin and not with_integrity:
        return "sri-not-implemented-and-external-scripts-not-loaded-securely"
    if with_integrity:
        return "sri-implemented-and-all-scripts-loaded-securely"
    return "sri-not-implemented-but-all-scripts-loaded-from-secure-origin"


def _xfo(headers) -> str:
    if "frame-ancestors" in headers.get("content-security-policy", "").lower():
        return "x-frame-options-implemented-via-csp"
    if headers.get("x-frame-options", "").strip().upper() in ("DENY", "SAMEORIGIN"):
        return "x-frame-options-sameorigin-or-deny"
    return "x-frame-options-not-implemented"


def _corp(headers) -> str:
    value = headers.get("cross-origin-resource-policy", "").strip().lower()
    return {"same-origin": "corp-implemented-with-same-origin", "same-site": "corp-implemented-with-same-site",
            "cross-origin": "corp-implemented-with-cross-origin"}.get(value, "corp-not-implemented")


def _cors(headers) -> str:
    value = headers.get("access-control-allow-origin")
    if value is None:
        return "cross-origin-resource-sharing-not-implemented"
    return ("cross-origin-resource-sharing-implemented-with-universal-access" if value.strip() == "*"
            else "cross-origin-resource-sharing-implemented-with-restricted-access")


def redirection(http_url: str, location: str | None, status: int) -> str:
    if status not in (301, 302, 307, 308) or not location:
        return "redirection-missing"
    target = urlsplit(location)
    if target.scheme != "https":
        return "redirection-not-to-https"
    if target.hostname != urlsplit(http_url).hostname:
        return "redirection-off-host-from-http"
    return "redirection-to-https"


def score(*, headers: dict[str, str], set_cookies: list[str], html: str, origin: str, redirect_result: str) -> Score:
    """`headers` with lower-case names; `set_cookies` every Set-Cookie value; `html` the body."""
    return Score({
        "content-security-policy": _csp(headers),
        "cookies": _cookies(set_cookies),
        "cross-origin-resource-sharing": _cors(headers),
        "redirection": redirect_result,
        "referrer-policy": _referrer(headers),
        "strict-transport-security": _hsts(headers),
        "subresource-integrity": _sri(html, origin),
        "x-content-type-options": ("x-content-type-options-nosniff"
                                   if headers.get("x-content-type-options", "").strip().lower() == "nosniff"
                                   else "x-content-type-options-not-implemented"),
        "x-frame-options": _xfo(headers),
        "cross-origin-resource-policy": _corp(headers),
    })
