"""Google's side of a Gmail push, for the tests: a certificate endpoint and the OIDC tokens Pub/Sub
puts on a push, signed exactly as Google signs them (RS256 with a generated RSA key whose X.509
certificate the endpoint publishes as {kid: PEM}, like https://www.googleapis.com/oauth2/v1/certs).

`push_token()` makes the claims a push subscription's token carries (aud = the push endpoint, iss,
email of the push service account, email_verified, iat/exp an hour apart); keyword arguments
override or (with None) drop any of them. `rotate()` adds a new signing key (served beside the old
one), `envelope()` wraps a Gmail notification the way Pub/Sub posts it.
"""

import base64
import datetime as dt
import json
import time
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from tests.harness.gmail_api_server import HttpsFake, Recorded, Response

AUDIENCE = "https://aiemaily.test/webhooks/gmail"
SERVICE_ACCOUNT = "gmail-push@aiemaily-test.iam.gserviceaccount.com"
TOPIC = "projects/aiemaily-test/topics/gmail-push"
SUBSCRIPTION = "projects/aiemaily-test/subscriptions/gmail-push"


def _key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.system.gserviceaccount.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=14)).sign(key, hashes.SHA256()))
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return private, cert.public_bytes(serialization.Encoding.PEM).decode()


class GoogleCerts(HttpsFake):
    """The certificate endpoint (no bearer needed) and the signer of push tokens."""

    def reset(self) -> None:
        super().reset()
        with self.lock:
            if not hasattr(self, "keys"):
                self.keys: dict[str, tuple[str, str]] = {}
                self.rotate()
            self.kid = next(iter(self.keys))
            self.served = set(self.keys)

    @property
    def url(self) -> str:
        return self.origin + "/oauth2/v1/certs"

    def rotate(self) -> str:
        """A new signing key, published beside the old ones and used from now on."""
        with self.lock:
            kid = uuid.uuid4().hex[:40]
            self.keys[kid] = _key_pair()
            self.kid = kid
            self.served = set(self.keys)
            return kid

    def handle(self, request: Recorded) -> Response:
        with self.lock:
            self.requests.append(request)
            if request.path != "/oauth2/v1/certs":
                return Response.json(404, {"error": "not found"})
            return Response.json(200, {kid: self.keys[kid][1] for kid in sorted(self.served)},
                                 **{"Cache-Control": "public, max-age=22000, must-revalidate, no-transform"})

    def fetches(self) -> int:
        return len(self.seen("/oauth2/v1/certs"))

    def sign(self, claims: dict, *, kid: str | None = None, private_pem: str | None = None) -> str:
        kid = kid or self.kid
        signer = crypt.RSASigner.from_string(private_pem or self.keys[kid][0], key_id=kid)
        return jwt.encode(signer, claims).decode()

    def push_token(self, **overrides) -> str:
        now = int(time.time())
        claims = {"aud": AUDIENCE, "azp": "1134", "email": SERVICE_ACCOUNT, "email_verified": True,
                  "exp": now + 3600, "iat": now, "iss": "https://accounts.google.com", "sub": "1134"}
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return self.sign(claims)


def envelope(data: dict | bytes, message_id: str | None = None) -> bytes:
    """A Pub/Sub push body around a Gmail notification ({"emailAddress", "historyId"})."""
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    message_id = message_id or str(uuid.uuid4().int % 10**16)
    return json.dumps({"message": {"data": base64.b64encode(raw).decode(), "messageId": message_id,
                                   "message_id": message_id, "publishTime": "2026-12-01T10:00:00.000Z",
                                   "publish_time": "2026-12-01T10:00:00.000Z", "attributes": {}},
                       "subscription": SUBSCRIPTION}).encode()
