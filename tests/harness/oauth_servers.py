"""Local Google and Microsoft OAuth servers for the tests, speaking the providers' documented wire formats.

Close enough that the real client libraries run against them unmodified: google-auth-oauthlib and
requests-oauthlib (code exchange, HTTP Basic client authentication), google-auth (refresh,
client_secret_post), and msal (OpenID discovery, auth-code flow with PKCE and nonce, refresh).
Each server is an HTTPS ThreadingHTTPServer in a thread with a certificate from the test CA, and
records every request so tests can assert what was sent, by whom.

Documented behaviour implemented:
  Google   GET  /o/oauth2/v2/auth        consent; 302 to redirect_uri with code, state, scope
           POST /token                   authorization_code (PKCE S256, client secret, single use)
                                         and refresh_token grants; errors as {"error": "invalid_grant"}
           POST /revoke                  revokes the grant a token belongs to; 400 invalid_token
           GET  /v1/userinfo             OpenID Connect userinfo for a bearer access token
  Microsoft GET /{tenant}/v2.0/.well-known/openid-configuration
           GET  /{tenant}/oauth2/v2.0/authorize   consent; 302 with code, state, session_state
           POST /{tenant}/oauth2/v2.0/token       authorization_code and refresh_token (rotating)

Consent is simulated by `consent(authorize_url, account=..., grant=..., deny=...)`: it follows the
URL like a browser whose user clicked "Allow" and returns the redirect to our callback. The test-only
choices travel as extra query parameters prefixed `test_`, which the real providers do not have.
"""

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.harness.https_server import Response as BaseResponse
from tests.harness.https_server import TLSServer, write_response

CODE_LIFETIME = 600
ACCESS_LIFETIME = 3599


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict
    form: dict
    headers: dict

    def text(self) -> str:
        """Everything in the request, for "this secret never appears here" checks."""
        return json.dumps([self.path, self.query, self.form, self.headers])

    def basic_auth(self) -> tuple[str, str] | None:
        value = self.headers.get("authorization", "")
        if not value.lower().startswith("basic "):
            return None
        client_id, _, secret = base64.b64decode(value[6:]).decode().partition(":")
        return unquote_plus(client_id), unquote_plus(secret)


class Response(BaseResponse):
    """As the OAuth servers answer: JSON never cached (RFC 6749 5.1), and redirects back to the client."""

    @classmethod
    def json(cls, status: int, payload) -> "Response":
        return cls(status, json.dumps(payload).encode(),
                   {"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store"})

    @classmethod
    def redirect(cls, url: str) -> "Response":
        return cls(302, b"", {"Location": url})


@dataclass
class Grant:
    """What a user consented to for one client: the tokens issued under it die with it."""

    account: str
    subject: str
    scopes: list[str]
    revoked: bool = False


@dataclass
class Code:
    grant: Grant
    client_id: str
    redirect_uri: str
    challenge: str | None
    method: str | None
    nonce: str | None
    offline: bool
    issued: float
    used: bool = False


def _shaped(shape: tuple[str, int]) -> str:
    prefix, size = shape
    return prefix + secrets.token_urlsafe(size)


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_TLSServer"

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _dispatch(self):
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        form = dict(parse_qsl(raw, keep_blank_values=True)) if "urlencoded" in self.headers.get(
            "Content-Type", "") else {}
        request = Recorded(self.command, parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)), form,
                           {k.lower(): v for k, v in self.headers.items()})
        response = self.server.owner.handle(request)
        write_response(self, response)

    def log_message(self, *args):  # quiet: the recorded requests are the log
        pass


class _TLSServer(TLSServer):
    def handle_error(self, request, client_address):
        pass  # a client that hangs up mid-request is not a test failure


class FakeOAuthServer:
    """The common part: TLS, threads, request log, clients, grants, codes and tokens."""

    def __init__(self, test_ca, *, client_id: str, client_secret: str):
        self.ca_file = str(test_ca.ca_file)
        self.client_id, self.client_secret = client_id, client_secret
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = secrets.token_hex(8)
        self.lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.codes: dict[str, Code] = {}
        self.refresh_tokens: dict[str, Grant] = {}
        self.access_tokens: dict[str, tuple[Grant, float]] = {}
        self.consents: dict[str, set[str]] = {}  # account -> scopes granted earlier (incremental auth)
        self.rotate_refresh_tokens = False
        self.token_delay = 0.0  # seconds the token endpoint thinks before answering a refresh
        self.fail_token_endpoint: int | None = None  # answer every token request with this 5xx
        self._server = _TLSServer(self, test_ca, _Handler).start()
        self.port = self._server.server_address[1]
        self.base_url = f"https://localhost:{self.port}"

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        """Forget everything: each test starts with a server nobody has used."""
        with self.lock:
            for store in (self.requests, self.codes, self.refresh_tokens, self.access_tokens, self.consents):
                store.clear()
            self.rotate_refresh_tokens, self.token_delay, self.fail_token_endpoint = False, 0.0, None

    # --- what tests look at ----------------------------------------------------------------

    def requests_to(self, suffix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(suffix)]

    def live_refresh_tokens(self) -> list[str]:
        return [token for token, grant in self.refresh_tokens.items() if not grant.revoked]

    def access_token_valid(self, token: str) -> bool:
        entry = self.access_tokens.get(token)
        return bool(entry) and not entry[0].revoked and entry[1] > time.time()

    def expire_codes(self) -> None:
        with self.lock:
            for code in self.codes.values():
                code.issued -= CODE_LIFETIME + 1

    def revoke_account(self, account: str) -> None:
        """What the user does at myaccount.google.com/permissions: every grant of theirs dies."""
        with self.lock:
            for grant in {id(g): g for g in self.refresh_tokens.values()}.values():
                if grant.account == account:
                    grant.revoked = True
            self.consents.pop(account, None)

    def consent(self, authorize_url: str, *, account: str = "someone@example.test", grant=None,
                deny: bool = False) -> str:
        """Be the browser: open the consent page, click Allow (or Deny), return the redirect target."""
        extra = {"test_account": account}
        if grant is not None:
            extra["test_grant"] = " ".join(grant)
        if deny:
            extra["test_deny"] = "1"
        response = requests.get(f"{authorize_url}&{urlencode(extra)}", allow_redirects=False, verify=self.ca_file,
                                timeout=10)
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    # --- plumbing ----------------------------------------------------------------------------

    def handle(self, request: Recorded) -> Response:
        with self.lock:
            self.requests.append(request)
        return self.route(request)

    def route(self, request: Recorded) -> Response:
        raise NotImplementedError

    def code_refused(self, error: str) -> Response:
        """The token endpoint's answer to a code redeem_code() refused, worded as the provider words it."""
        raise NotImplementedError

    def _token_body(self, grant: Grant, request: Recorded | None = None, *, nonce=None) -> dict:
        raise NotImplementedError

    def client_auth(self, request: Recorded) -> tuple[str | None, str | None]:
        """client_secret_basic or client_secret_post, as RFC 6749 2.3.1 allows."""
        basic = request.basic_auth()
        if basic:
            return basic
        return request.form.get("client_id"), request.form.get("client_secret")

    def id_token(self, claims: dict, nonce=None) -> str:
        if nonce:
            claims["nonce"] = nonce
        return jwt.encode(claims, self.signing_key, algorithm="RS256", headers={"kid": self.key_id})

    def _token_for_code(self, request: Recorded) -> Response:
        """The authorization_code grant: a refused code answers as the provider words it (code_refused)."""
        code = self.redeem_code(request)
        if isinstance(code, str):
            return self.code_refused(code)
        with self.lock:
            body = self._token_body(code.grant, request, nonce=code.nonce)
            if code.offline:
                body["refresh_token"] = self.new_refresh_token(code.grant)
        return Response.json(200, body)

    def issue_code(self, request: Recorded, granted: list[str], *, offline: bool) -> str:
        account = request.query.get("test_account", "someone@example.test")
        grant = Grant(account=account, subject=self.subject_of(account), scopes=granted)
        code = self.new_code()
        with self.lock:
            self.codes[code] = Code(grant, request.query.get("client_id", ""), request.query.get("redirect_uri", ""),
                                    request.query.get("code_challenge"), request.query.get("code_challenge_method"),
                                    request.query.get("nonce"), offline, time.time())
            self.consents.setdefault(account, set()).update(granted)
        return code

    def subject_of(self, account: str) -> str:
        return str(int(hashlib.sha256(account.encode()).hexdigest()[:20], 16))

    def redeem_code(self, request: Recorded) -> Code | str:
        """The code's record, or the error text per RFC 6749 / RFC 7636."""
        with self.lock:
            code = self.codes.get(request.form.get("code", ""))
            if code is None:
                return "invalid_grant"
            if code.used:
                # RFC 6749 4.1.2: a code used twice revokes what it issued.
                code.grant.revoked = True
                return "invalid_grant"
            if code.issued + CODE_LIFETIME < time.time():
                return "invalid_grant"
            if request.form.get("redirect_uri") != code.redirect_uri:
                return "redirect_uri_mismatch"
            if code.client_id != self.client_id:
                return "invalid_grant"
            if code.challenge:
                verifier = request.form.get("code_verifier", "")
                if code.method != "S256" or not verifier or _s256(verifier) != code.challenge:
                    return "invalid_grant"
            code.used = True
            return code

    def new_refresh_token(self, grant: Grant) -> str:
        token = self.refresh_token_format()
        self.refresh_tokens[token] = grant
        return token

    def new_access_token(self, grant: Grant) -> str:
        token = self.access_token_format()
        self.access_tokens[token] = (grant, time.time() + ACCESS_LIFETIME)
        return token

    def use_refresh_token(self, token: str) -> tuple[Grant, str | None] | None:
        """Check a refresh token; rotate it (the old one dies at once) when rotation is on."""
        with self.lock:
            grant = self.refresh_tokens.get(token)
            if grant is None or grant.revoked:
                return None
            rotated = None
            if self.rotate_refresh_tokens:
                del self.refresh_tokens[token]
                rotated = self.new_refresh_token(grant)
            return grant, rotated

    def granted_scopes(self, request: Recorded, requested: list[str], incremental: bool) -> list[str]:
        account = request.query.get("test_account", "someone@example.test")
        granted = request.query["test_grant"].split() if "test_grant" in request.query else list(requested)
        if incremental:
            earlier = [s for s in sorted(self.consents.get(account, ())) if s not in granted]
            granted = granted + earlier
        return granted

    # What the provider's codes and tokens look like, set by each provider: (prefix, random bytes).
    code_shape: tuple[str, int]
    refresh_token_shape: tuple[str, int]
    access_token_shape: tuple[str, int]

    def new_code(self) -> str:
        return _shaped(self.code_shape)

    def refresh_token_format(self) -> str:
        return _shaped(self.refresh_token_shape)

    def access_token_format(self) -> str:
        return _shaped(self.access_token_shape)


class FakeGoogle(FakeOAuthServer):
    """accounts.google.com + oauth2.googleapis.com + openidconnect.googleapis.com, in one server."""

    issuer = "https://accounts.google.com"
    code_shape, refresh_token_shape, access_token_shape = ("4/0A", 60), ("1//0", 75), ("ya29.a0", 120)

    def __init__(self, test_ca):
        super().__init__(test_ca, client_id=f"{secrets.token_hex(6)}-test.apps.googleusercontent.com",
                         client_secret="GOCSPX-" + secrets.token_urlsafe(21))
        self.issue_id_tokens = True  # off: the client must ask userinfo for the address

    def reset(self):
        super().reset()
        self.issue_id_tokens = True

    @property
    def settings(self) -> dict:
        return {"GOOGLE_OAUTH_CLIENT_ID": self.client_id, "GOOGLE_OAUTH_CLIENT_SECRET": self.client_secret,
                "GOOGLE_AUTH_URI": f"{self.base_url}/o/oauth2/v2/auth", "GOOGLE_TOKEN_URI": f"{self.base_url}/token",
                "GOOGLE_REVOKE_URI": f"{self.base_url}/revoke", "GOOGLE_USERINFO_URI": f"{self.base_url}/v1/userinfo"}

    def route(self, request):
        if request.method == "GET" and request.path == "/o/oauth2/v2/auth":
            return self.authorize(request)
        if request.method == "POST" and request.path == "/token":
            return self.token(request)
        if request.method == "POST" and request.path == "/revoke":
            return self.revoke(request)
        if request.method == "GET" and request.path == "/v1/userinfo":
            return self.userinfo(request)
        return Response.json(404, {"error": "not_found"})

    def authorize(self, request):
        q = request.query
        if q.get("client_id") != self.client_id:
            return Response(401, b"Error 401: invalid_client")
        if q.get("response_type") != "code" or not q.get("scope") or not q.get("redirect_uri"):
            return Response(400, b"Error 400: invalid_request")
        if q.get("code_challenge") and q.get("code_challenge_method") not in ("S256", "plain"):
            return Response(400, b"Error 400: invalid_request (code_challenge_method)")
        back = {"state": q["state"]} if "state" in q else {}
        if q.get("test_deny"):
            return Response.redirect(f"{q['redirect_uri']}?{urlencode({'error': 'access_denied', **back})}")
        granted = self.granted_scopes(request, q["scope"].split(), q.get("include_granted_scopes") == "true")
        code = self.issue_code(request, granted, offline=q.get("access_type") == "offline")
        params = {**back, "code": code, "scope": " ".join(granted), "authuser": "0", "prompt": "consent"}
        return Response.redirect(f"{q['redirect_uri']}?{urlencode(params)}")

    def _error(self, status, error, description="Bad Request"):
        return Response.json(status, {"error": error, "error_description": description})

    def token(self, request):
        if self.fail_token_endpoint:
            return self._error(self.fail_token_endpoint, "internal_failure", "Backend Error")
        client_id, secret = self.client_auth(request)
        if client_id != self.client_id or secret != self.client_secret:
            return self._error(401, "invalid_client", "Unauthorized")
        grant_type = request.form.get("grant_type")
        if grant_type == "authorization_code":
            return self._token_for_code(request)
        if grant_type == "refresh_token":
            return self._token_for_refresh(request)
        return self._error(400, "unsupported_grant_type", "Invalid grant_type: " + str(grant_type))

    def _token_body(self, grant: Grant, request: Recorded | None = None, *, nonce=None) -> dict:
        now = int(time.time())
        access = self.new_access_token(grant)
        body = {"access_token": access, "expires_in": ACCESS_LIFETIME, "scope": " ".join(grant.scopes),
                "token_type": "Bearer"}
        if "openid" in grant.scopes and self.issue_id_tokens:
            claims = {"iss": self.issuer, "azp": self.client_id, "aud": self.client_id, "sub": grant.subject,
                      "at_hash": _s256(access)[:22], "iat": now, "exp": now + 3600}
            if any(s in grant.scopes for s in ("email", "https://www.googleapis.com/auth/userinfo.email")):
                claims.update(email=grant.account, email_verified=True)
            body["id_token"] = self.id_token(claims, nonce)
        return body

    def code_refused(self, error):
        return self._error(400, error, "Malformed auth code." if error == "invalid_grant" else "Bad Request")

    def _token_for_refresh(self, request):
        time.sleep(self.token_delay)
        used = self.use_refresh_token(request.form.get("refresh_token", ""))
        if used is None:
            return self._error(400, "invalid_grant", "Token has been expired or revoked.")
        grant, rotated = used
        with self.lock:
            body = self._token_body(grant)
        if rotated:
            body["refresh_token"] = rotated
        return Response.json(200, body)

    def revoke(self, request):
        token = request.form.get("token") or request.query.get("token", "")
        with self.lock:
            grant = self.refresh_tokens.get(token) or (self.access_tokens.get(token) or (None,))[0]
            if grant is None or grant.revoked:
                return self._error(400, "invalid_token", "Token expired or revoked")
            grant.revoked = True
            self.consents.pop(grant.account, None)
        return Response.json(200, {})

    def userinfo(self, request):
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not self.access_token_valid(token):
            return Response(401, b'{"error": "invalid_request"}', {"WWW-Authenticate": 'Bearer error="invalid_token"',
                                                                   "Content-Type": "application/json"})
        grant = self.access_tokens[token][0]
        return Response.json(200, {"sub": grant.subject, "email": grant.account, "email_verified": True})


class FakeMicrosoft(FakeOAuthServer):
    """login.microsoftonline.com for the v2.0 endpoints, any tenant segment (common, organizations, a GUID)."""

    tenant_id = "9188040d-6c67-4c5b-b112-36a304b66dad"  # the tenant Microsoft uses for personal accounts
    code_shape, refresh_token_shape, access_token_shape = ("M.C5", 90), ("M.C5", 200), ("EwB", 300)

    def __init__(self, test_ca):
        super().__init__(test_ca, client_id=str(uuid.uuid4()), client_secret="Qq8~" + secrets.token_urlsafe(30))
        self.rotate_refresh_tokens = True  # Microsoft hands out a new refresh token with every refresh

    def reset(self):
        super().reset()
        self.rotate_refresh_tokens = True

    @property
    def authority(self) -> str:
        return f"{self.base_url}/common"

    @property
    def settings(self) -> dict:
        return {"MICROSOFT_CLIENT_ID": self.client_id, "MICROSOFT_CLIENT_SECRET": self.client_secret,
                "MICROSOFT_AUTHORITY": self.authority}

    def route(self, request):
        tenant, _, rest = request.path.lstrip("/").partition("/")
        if request.method == "GET" and rest == "v2.0/.well-known/openid-configuration":
            return self.discovery(tenant)
        if request.method == "GET" and rest == "oauth2/v2.0/authorize":
            return self.authorize(request)
        if request.method == "POST" and rest == "oauth2/v2.0/token":
            return self.token(request)
        return Response.json(404, {"error": "not_found"})

    def discovery(self, tenant):
        base = f"{self.base_url}/{tenant}"
        return Response.json(200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{self.base_url}/{{tenantid}}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
                                 "name", "tid", "ver", "at_hash", "c_hash", "email"],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": None,
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        })

    def authorize(self, request):
        q = request.query
        if q.get("client_id") != self.client_id:
            return Response(400, b"AADSTS700016: Application not found in the directory.")
        if q.get("response_type") != "code" or not q.get("redirect_uri") or not q.get("scope"):
            return Response(400, b"AADSTS900144: The request body must contain the following parameter.")
        back = {"state": q["state"]} if "state" in q else {}
        if q.get("test_deny"):
            error = {"error": "access_denied",
                     "error_description": "AADSTS65004: User declined to consent to access the app."}
            return Response.redirect(f"{q['redirect_uri']}?{urlencode({**error, **back})}")
        granted = self.granted_scopes(request, q["scope"].split(), incremental=False)
        code = self.issue_code(request, granted, offline="offline_access" in granted)
        params = {"code": code, **back, "session_state": str(uuid.uuid4())}
        return Response.redirect(f"{q['redirect_uri']}?{urlencode(params)}")

    def _error(self, status, error, number, description):
        return Response.json(status, {"error": error, "error_description": f"AADSTS{number}: {description}",
                                      "error_codes": [number], "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ"),
                                      "trace_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4())})

    def token(self, request):
        if self.fail_token_endpoint:
            return self._error(self.fail_token_endpoint, "temporarily_unavailable", 50001, "Service unavailable.")
        client_id, secret = self.client_auth(request)
        if client_id != self.client_id or secret != self.client_secret:
            return self._error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        grant_type = request.form.get("grant_type")
        if grant_type == "authorization_code":
            return self._token_for_code(request)
        if grant_type == "refresh_token":
            return self._token_for_refresh(request)
        return self._error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")

    @staticmethod
    def _resource_scope(name: str) -> str:
        # The answer names Graph permissions with their resource, as the access token's audience.
        return name if name in ("openid", "profile", "email", "offline_access") else f"https://graph.microsoft.com/{name}"

    def _token_body(self, grant: Grant, request: Recorded, *, nonce=None, strict_scope=False) -> dict:
        """With strict_scope (refresh), asking beyond the grant fails like AADSTS65001; a code
        redemption instead answers with what was granted and says so in `scope` (RFC 6749 5.1)."""
        now = int(time.time())
        asked = request.form.get("scope", "").split()
        if strict_scope and any(s not in grant.scopes and s not in ("openid", "profile", "offline_access")
                                for s in asked):
            return {}
        body = {"token_type": "Bearer",
                "scope": " ".join(self._resource_scope(s) for s in grant.scopes if s != "offline_access"),
                "expires_in": ACCESS_LIFETIME, "ext_expires_in": ACCESS_LIFETIME,
                "access_token": self.new_access_token(grant)}
        oid = str(uuid.UUID(int=int(grant.subject) % (1 << 128)))
        if request.form.get("client_info") == "1":
            body["client_info"] = base64.urlsafe_b64encode(
                json.dumps({"uid": oid, "utid": self.tenant_id}).encode()).rstrip(b"=").decode()
        if "openid" in grant.scopes:
            claims = {"ver": "2.0", "iss": f"{self.base_url}/{self.tenant_id}/v2.0", "sub": grant.subject,
                      "aud": self.client_id, "exp": now + 3600, "iat": now, "nbf": now, "tid": self.tenant_id,
                      "oid": oid, "preferred_username": grant.account, "name": grant.account.split("@")[0],
                      "aio": secrets.token_urlsafe(12)}
            if "email" in grant.scopes:
                claims["email"] = grant.account
            body["id_token"] = self.id_token(claims, nonce)
        return body

    def code_refused(self, error):
        return self._error(400, "invalid_grant", 54005 if error == "invalid_grant" else 50011,
                           "OAuth2 Authorization code was already redeemed, expired, or does not match.")

    def _token_for_refresh(self, request):
        time.sleep(self.token_delay)
        used = self.use_refresh_token(request.form.get("refresh_token", ""))
        if used is None:
            return self._error(400, "invalid_grant", 70000,
                               "The provided grant has expired due to it being revoked.")
        grant, rotated = used
        with self.lock:
            body = self._token_body(grant, request, strict_scope=True)
            if not body:
                return self._error(400, "invalid_grant", 65001, "The user or administrator has not consented.")
            # Microsoft rotates on every refresh; without rotation the same token comes back.
            body["refresh_token"] = rotated or request.form["refresh_token"]
        return Response.json(200, body)
