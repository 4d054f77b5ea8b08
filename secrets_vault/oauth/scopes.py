"""Least-privilege provider scopes: each one tied to the feature that needs it, and why.

Shown to the user as-is on the connection page (requested vs. granted), and used to decide what a
connection may do when the user granted less than we asked.

Gmail: read needs gmail.readonly; archiving and labelling messages need gmail.modify (gmail.labels
only manages label *definitions* and cannot apply them; archive = removing the INBOX label);
sending needs gmail.send. gmail.modify also covers reading and sending, so once it is granted
readonly is redundant, but we still ask per capability (incremental authorization) so a user who
only wants summaries never grants modify. We never ask for contacts, Drive, or admin scopes.

Microsoft Graph: Mail.Read to read, Mail.ReadWrite to move (archive) and set categories (labels),
Mail.Send to send; offline_access for a refresh token; openid + email only to learn the address.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    name: str
    feature: str
    why: str


GOOGLE_IDENTITY = [
    Scope("openid", "sign-in identity", "to know which Google account was connected"),
    Scope("https://www.googleapis.com/auth/userinfo.email", "your address",
          "to show which mailbox this connection is; nothing else about your profile"),
]
GOOGLE = {
    "read": Scope("https://www.googleapis.com/auth/gmail.readonly", "read and summarise mail",
                  "to sync your messages and labels; cannot change or send anything"),
    "organise": Scope("https://www.googleapis.com/auth/gmail.modify", "archive and label",
                      "archiving and applying labels change messages; gmail.labels alone cannot apply labels"),
    "send": Scope("https://www.googleapis.com/auth/gmail.send", "send mail",
                  "to send replies you approve; cannot read your mailbox"),
}
MICROSOFT_IDENTITY = [
    Scope("openid", "sign-in identity", "to know which Microsoft account was connected"),
    Scope("email", "your address", "to show which mailbox this connection is"),
    Scope("offline_access", "stay connected", "a refresh token, so you do not sign in again every hour"),
]
MICROSOFT = {
    "read": Scope("Mail.Read", "read and summarise mail", "to sync your messages; cannot change or send"),
    "organise": Scope("Mail.ReadWrite", "archive and categorise",
                      "moving messages to Archive and setting categories change messages"),
    "send": Scope("Mail.Send", "send mail", "to send replies you approve"),
}
CAPABILITIES = ("read", "organise", "send")
PROVIDER_SCOPES = {"gmail": (GOOGLE_IDENTITY, GOOGLE), "microsoft": (MICROSOFT_IDENTITY, MICROSOFT)}


def scopes_for(provider: str, capabilities) -> list[str]:
    identity, table = PROVIDER_SCOPES[provider]
    unknown = set(capabilities) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"unknown capabilities: {sorted(unknown)}")
    return [s.name for s in identity] + [table[c].name for c in CAPABILITIES if c in capabilities]


def describe(provider: str, scope_names) -> list[Scope]:
    identity, table = PROVIDER_SCOPES.get(provider, ([], {}))
    known = {s.name: s for s in [*identity, *table.values()]}
    return [known.get(name, Scope(name, "unknown", "not requested by Aiemaily")) for name in scope_names]


def _normalise(provider: str, scopes) -> set[str]:
    # Microsoft answers with resource-qualified names (https://graph.microsoft.com/Mail.Read).
    prefix = "https://graph.microsoft.com/"
    return {s[len(prefix):] if provider == "microsoft" and s.startswith(prefix) else s for s in scopes}


def compare(provider: str, requested, granted) -> tuple[set[str], set[str]]:
    """(broader: granted but never requested, missing: requested but not granted)."""
    requested, granted = _normalise(provider, requested), _normalise(provider, granted)
    if provider == "gmail":
        # Google adds "email" for userinfo.email; it is the same grant, not a broader one.
        granted = {"https://www.googleapis.com/auth/userinfo.email" if s == "email" else s for s in granted}
    return granted - requested, requested - granted


def capabilities_granted(provider: str, granted) -> set[str]:
    granted = _normalise(provider, granted)
    _, table = PROVIDER_SCOPES[provider]
    caps = {cap for cap, scope in table.items() if scope.name in granted}
    if "organise" in caps:
        caps.add("read")  # gmail.modify / Mail.ReadWrite include reading
        if provider == "gmail":
            caps.add("send")  # gmail.modify includes sending
    return caps
