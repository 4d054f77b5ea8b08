"""Mail providers: OAuth clients and endpoints, the Gmail and Graph APIs, extra CA bundles."""

from aiemaily.env import env_https_url, env_int, env_secret, env_str
from aiemaily.settings.zones_and_keys import plays

# A send still `sending` (or `uncertain`) this long after it began is reconciled through the Sent
# folder by beat; a message still not there then is `failed` (mail/send/outbox.py).
AIEMAILY_SEND_STALE_SECONDS = env_int("AIEMAILY_SEND_STALE_SECONDS", 600)
# Extra CA certificates trusted for IMAP/SMTP TLS (a company CA; the test harness's CA).
AIEMAILY_MAIL_CA_BUNDLE = env_str("AIEMAILY_MAIL_CA_BUNDLE")
# OAuth clients. Web builds consent URLs (client ids are public); worker-vault exchanges codes and
# refreshes tokens, so only it reads the client secrets (mail/web/oauth.py, secrets_vault/oauth/).
# Codes, verifiers and tokens travel to the endpoints: https:// only (env_https_url), even in development.
GOOGLE_OAUTH_CLIENT_ID = env_str("GOOGLE_OAUTH_CLIENT_ID")
GOOGLE_OAUTH_CLIENT_SECRET = env_secret("GOOGLE_OAUTH_CLIENT_SECRET") if "vault" in plays else None
GOOGLE_AUTH_URI = env_https_url("GOOGLE_AUTH_URI", "https://accounts.google.com/o/oauth2/v2/auth")
GOOGLE_TOKEN_URI = env_https_url("GOOGLE_TOKEN_URI", "https://oauth2.googleapis.com/token")
GOOGLE_REVOKE_URI = env_https_url("GOOGLE_REVOKE_URI", "https://oauth2.googleapis.com/revoke")
GOOGLE_USERINFO_URI = env_https_url("GOOGLE_USERINFO_URI", "https://openidconnect.googleapis.com/v1/userinfo")
MICROSOFT_CLIENT_ID = env_str("MICROSOFT_CLIENT_ID")
MICROSOFT_CLIENT_SECRET = env_secret("MICROSOFT_CLIENT_SECRET") if "vault" in plays else None
MICROSOFT_AUTHORITY = env_https_url("MICROSOFT_AUTHORITY", "https://login.microsoftonline.com/common").rstrip("/")
# Extra CA certificates trusted for the OAuth endpoints above (the test harness's CA).
AIEMAILY_OAUTH_CA_BUNDLE = env_str("AIEMAILY_OAUTH_CA_BUNDLE")
# Mail APIs worker-sync calls with leased access tokens (mail/sync/gmail.py, mail/sync/graph.py);
# access tokens travel to these as bearer tokens: https:// only.
GMAIL_API_BASE = env_https_url("GMAIL_API_BASE", "https://gmail.googleapis.com").rstrip("/")
GRAPH_API_BASE = env_https_url("GRAPH_API_BASE", "https://graph.microsoft.com/v1.0").rstrip("/")
# Extra CA certificates trusted for the mail APIs above (the test harness's CA); None: the system's.
AIEMAILY_PROVIDER_CA_BUNDLE = env_str("AIEMAILY_PROVIDER_CA_BUNDLE")
# Extra CA certificates trusted when fetching a domain's mail autoconfig file (tests); None: the system's.
AIEMAILY_AUTOCONFIG_CA_BUNDLE = env_str("AIEMAILY_AUTOCONFIG_CA_BUNDLE")
