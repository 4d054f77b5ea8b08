"""The public promises, one place: the security page renders them and `make security-report` checks them.

Each promise has the id that tests carry as `@pytest.mark.claim("<id>")` (DESIGN.md, "Promises are
tested by name"). A promise is `proven` only when at least one test carrying its id ran and every
one of them passed. A promise whose feature is still being built is `planned`: the page says so in
plain words instead of claiming it, and CI does not require evidence for it yet. Once its feature
lands, remove `planned` and CI demands passing tests.

`asvs` lists the OWASP ASVS 5.0 requirements each promise covers (in part), by requirement id.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Claim:
    id: str
    title: str
    summary: str
    asvs: tuple[str, ...]
    deployment_note: str = ""
    planned: bool = False
    details: tuple[str, ...] = field(default_factory=tuple)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "envelope-encryption", "Envelope-encrypted secrets",
        "Every secret we hold for you (OAuth tokens, IMAP/SMTP passwords, your own AI keys) is encrypted "
        "with AES-256-GCM under a data key of your own; that data key is itself encrypted by a key-encryption "
        "key held in a KMS or HSM, and it is stored in a separate key store, never beside the ciphertext.",
        ("11.1.1", "11.2.1", "11.3.2", "11.3.3", "13.3.1"),
    ),
    Claim(
        "isolated-decryption", "Decrypted only in an isolated worker",
        "The web servers that answer your browser cannot decrypt a stored credential: they have no access "
        "to the key-encryption key or the data keys. Only the vault worker can, at the moment a credential "
        "is needed, and it hands other workers a short-lived sealed lease, never the stored secret.",
        ("13.3.2", "13.3.3", "8.3.3"),
    ),
    Claim(
        "no-plaintext-leaks", "Nothing sensitive in logs",
        "Passwords, tokens, keys and message bodies never appear in logs, error pages, task queues or task "
        "results. Our tests plant canary secrets and search every log, queue, database and file for them.",
        ("16.2.5", "16.5.1", "14.2.4", "14.2.1"),
    ),
    Claim(
        "per-object-keys", "Per-object keys for message bodies",
        "Each message body is stored as its own object, encrypted under its own key; that key is wrapped by "
        "a per-user storage key under a KMS key, so a copy of the object store alone reveals nothing.",
        ("11.3.2", "11.3.4", "14.1.2"),
    ),
    Claim(
        "data-at-rest", "Metadata encrypted at rest",
        "Subjects, addresses and snippets of your mail, the recipients and subject of mail you are sending, "
        "and the assistant's summaries and drafts, are stored encrypted under your own keys and searched "
        "through a keyed index, so a database dump holds none of them.",
        ("14.1.2", "11.3.3"),
    ),
    Claim(
        "crypto-shredding", "Deleting your account destroys your keys",
        "When you delete your account we destroy your data keys and storage keys. Your stored passwords, "
        "tokens and AI keys, your message bodies and your AI summaries then cannot be decrypted from any "
        "copy of our database or file store, backups included. Only a backup of our key stores made "
        "before the deletion still could, and those backups expire.",
        ("14.2.7", "11.1.1"),
        deployment_note=(
            "Operators keep backups of the two key stores (the vault database and the storage-key "
            "database) for a short, fixed time (docs/operations.md suggests 7 days): that is how long a "
            "deleted account's data stays decryptable anywhere."
        ),
    ),
    Claim(
        "least-privilege-scopes", "Least-privilege access to your mailbox",
        "We ask Google and Microsoft for the narrowest scopes that let the assistant work, show you exactly "
        "what was requested and what you granted, and revoke our grant when you disconnect.",
        ("10.2.3", "10.7.2", "10.2.1", "10.4.6"),
    ),
    Claim(
        "owner-scoping", "Every row, blob and task carries your owner id",
        "Each request is authorised at the data layer: the signed token is verified, your user id is taken "
        "from its claims, every query is bound to you by PostgreSQL row-level security, and object storage "
        "refuses a blob that belongs to someone else. Another user's object answers 404.",
        ("8.2.1", "8.2.2", "8.3.1", "8.4.1"),
    ),
    Claim(
        "jwt-auth", "Signed, short-lived API tokens",
        "API tokens are EdDSA-signed JWTs with a fixed algorithm, audience and issuer, valid for minutes; "
        "refresh tokens rotate and a reused one is refused.",
        ("9.1.1", "9.1.2", "9.2.1", "9.2.3"),
    ),
    Claim(
        "webhook-authenticity", "Webhooks verified before anything is processed",
        "Stripe deliveries are checked with Stripe's signature, Gmail push with Google's signed token, and "
        "Microsoft Graph with a secret per subscription, before any payload is read.",
        ("4.1.5", "13.2.1"),
    ),
    Claim(
        "webhook-replay", "Replayed webhooks are dropped",
        "Every delivery is recorded once by its id; a replayed, stale or tampered delivery is dropped and "
        "logged without its payload.",
        ("2.3.1", "16.3.3"),
    ),
    Claim(
        "csp", "Strict Content-Security-Policy",
        "No inline script runs on any page: scripts carry a per-response nonce, e-mail is shown in a "
        "sandboxed frame with its own policy, and remote images load only through a signed proxy when you ask.",
        ("3.4.3", "3.4.6", "3.4.7", "3.2.1", "3.4.4", "3.4.5"),
    ),
    Claim(
        "cors", "Per-route CORS",
        "Only the API answers cross-origin requests, and only to origins the operator listed.",
        ("3.4.2", "3.5.2"),
    ),
    Claim(
        "tls", "TLS 1.2+ with modern suites",
        "The shipped nginx configuration accepts only TLS 1.2 and 1.3 with forward-secret AEAD suites and "
        "sends HSTS.",
        ("12.1.1", "12.1.2", "12.2.1", "3.4.1"),
        deployment_note=(
            "True of the nginx configuration in deploy/nginx/ that our tests run. If you operate Aiemaily "
            "behind your own load balancer, check it with: testssl.sh --protocols --ciphers https://your-host/"
        ),
    ),
    Claim(
        "idempotency", "Idempotency keys on every change",
        "Every call that changes something accepts an Idempotency-Key: a retry replays the first answer "
        "instead of doing the work twice.",
        ("2.3.3", "2.3.4"),
    ),
    Claim(
        "exactly-once-send", "A retried send is never a second mail",
        "If a connection drops after the mail server accepted a message, we check your Sent folder before "
        "anything else happens: the mail is delivered once, never twice.",
        ("2.3.3", "16.5.3"),
    ),
    Claim(
        "billing-minimal-data", "Card data only at Stripe",
        "Payments go through Stripe's hosted Checkout and Customer Portal; we store only the Stripe customer "
        "id and the subscription status.",
        ("14.2.6", "14.2.3"),
    ),
    Claim(
        "ai-byok", "Your AI key stays in the vault",
        "Your own AI key is sealed in the vault like a mail password and reaches the AI worker only as a "
        "short-lived lease; what goes to a third-party model is redacted as you chose and recorded in your "
        "security log. An offline assistant works with no key at all.",
        ("13.3.2", "14.2.3"),
    ),
)

CLAIM_IDS = frozenset(claim.id for claim in CLAIMS)

# Beside the code, not through Django settings: scripts/security_report.py imports this without Django.
EVIDENCE_FILE = Path(__file__).resolve().parent.parent / "docs" / "security-claims.json"


def claims_evidence() -> dict:
    """The last `make security-report` run, committed with the code (never fetched at request time)."""
    try:
        return json.loads(EVIDENCE_FILE.read_text())
    except (OSError, ValueError):
        return {}
