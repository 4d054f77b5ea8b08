"""Web and transport hardening: security headers, CSP reports, SSRF guard, e-mail sanitising, image proxy.

See docs/security-headers.md for what each piece promises and which test proves it.
"""
