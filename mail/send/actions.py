"""Acting on messages at the provider (IMAP, Gmail, Microsoft Graph): archive, labels, read/unread —
then locally.

The provider is the source of truth: a change is applied there first (MOVE / UID STORE) and
reflected in our rows only after the server said OK. Labels on IMAP are keywords (RFC 3501 flags
without a backslash), which Dovecot, Fastmail and others store per message.

Gmail: users.messages.modify (archive = INBOX removed, read = UNREAD removed, labels = user label
ids, created with users.labels.create when the name is new); the row takes the label ids Gmail
answers with, and its folder follows them as sync files it (mail/sync_gmail.mailbox).
Microsoft Graph: archive = move to the well-known `archive` folder, read = PATCH isRead, labels =
PATCH categories. All of these are idempotent, so a task retried after a lost answer is harmless.
"""

import re
from urllib.parse import quote

import requests
from django.conf import settings
from urllib3.exceptions import NameResolutionError, NewConnectionError

from aiemaily.ownership.binding import owner_scope
from mail.models import Connection, Folder, Message
from mail.sync.gmail import GmailApi, mailbox
from mail.sync.graph import GraphApi
from mail.sync.rest import TIMEOUT, ApiClient, AuthFailed, ProviderError, folder_row, merge_state


def _folder_named(client, special: bytes, fallbacks: tuple[str, ...]) -> str:
    for flags, _, name in client.list_folders():
        if special in flags:
            return name
    for name in fallbacks:
        if client.folder_exists(name):
            return name
    client.create_folder(fallbacks[0])
    return fallbacks[0]


def archive(client, owner_id, message: Message) -> None:
    target = _folder_named(client, b"\\Archive", ("Archive", "Archives"))
    if message.folder.name == target:
        return
    client.select_folder(message.folder.name)
    if b"MOVE" in client.capabilities():
        client.move([message.uid], target)
    else:  # RFC 3501 fallback: copy, flag deleted, expunge just this UID
        client.copy([message.uid], target)
        client.add_flags([message.uid], [b"\\Deleted"])
        client.uid_expunge([message.uid])
    info = client.select_folder(target, readonly=True)
    new_uids = client.search(["HEADER", "Message-ID", message.message_id]) if message.message_id else []
    with owner_scope(owner_id):
        folder, _ = Folder.objects.for_owner(owner_id).get_or_create(
            owner_id=owner_id, connection_id=message.connection_id, name=target, defaults={"role": "archive"})
        if new_uids:
            Message.objects.for_owner(owner_id).filter(pk=message.pk).update(
                folder=folder, uid=max(new_uids), uidvalidity=int(info[b"UIDVALIDITY"]))
        else:
            # No way to find its new UID: drop our row, the next sync of the archive brings it back.
            Message.objects.for_owner(owner_id).filter(pk=message.pk).delete()


def set_labels(client, owner_id, message: Message, add: list[str], remove: list[str]) -> None:
    client.select_folder(message.folder.name)
    if add:
        client.add_flags([message.uid], [label.encode() for label in add])
    if remove:
        client.remove_flags([message.uid], [label.encode() for label in remove])
    labels = [label for label in message.labels if label not in remove]
    labels += [label for label in add if label not in labels]
    with owner_scope(owner_id):
        Message.objects.for_owner(owner_id).filter(pk=message.pk).update(labels=labels)


def set_read(client, owner_id, message: Message, unread: bool) -> None:
    client.select_folder(message.folder.name)
    if unread:
        client.remove_flags([message.uid], [b"\\Seen"])
    else:
        client.add_flags([message.uid], [b"\\Seen"])
    flags = [f for f in message.flags if f != "\\Seen"] + ([] if unread else ["\\Seen"])
    with owner_scope(owner_id):
        Message.objects.for_owner(owner_id).filter(pk=message.pk).update(unread=unread, flags=flags)


# --- Gmail and Microsoft Graph ---------------------------------------------------------------------
# Writes go through `call_once`: exactly one HTTP attempt, its failure classified, so the caller
# decides whether a repeat is safe. ApiClient.request retries by itself, which is right for reads
# and wrong for a send: a retried POST after a dropped answer could be a second message.

class Transient(ProviderError):
    """The provider certainly did not act (throttled, unavailable, never reached): try again later."""

    code = "unavailable"


class Ambiguous(ProviderError):
    """The request reached the provider and the answer was lost (or was a 5xx that may follow a
    change): it may or may not have acted."""

    code = "uncertain"


_GMAIL_USER = "/gmail/v1/users/me"
_ERROR_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,63}$")  # error codes only: never free text echoing input


def _never_reached(exc: requests.RequestException) -> bool:
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError | NameResolutionError)


def _refusal_reason(response: requests.Response) -> str:
    """The provider's error code (e.g. invalidArgument, ErrorInvalidRecipients): safe to show."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return ""
    candidates = [error.get("code")] + [e.get("reason") for e in error.get("errors") or [] if isinstance(e, dict)]
    names = [str(c) for c in candidates if isinstance(c, str) and _ERROR_NAME.match(c)]
    return names[-1] if names else ""


def call_once(api: ApiClient, method: str, path: str, *, what: str, **kwargs) -> requests.Response:
    """One request with the client's session, token and CA settings; a 2xx response or a typed error.
    Messages name the provider and the HTTP status, never the URL, token or body."""
    url = api.url(path)
    verify = settings.AIEMAILY_PROVIDER_CA_BUNDLE or True
    try:
        # _session(): the client's per-thread session, already carrying the bearer token.
        response = api._session().request(method, url, timeout=TIMEOUT, allow_redirects=False, verify=verify,
                                          **kwargs)
    except requests.exceptions.SSLError:
        raise ProviderError(f"{api.name}'s server certificate could not be verified.") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        if _never_reached(exc):
            raise Transient(f"{api.name} could not be reached; trying again shortly.") from None
        raise Ambiguous(f"The connection to {api.name} failed while it was handling the request.") from None
    status = response.status_code
    if 200 <= status < 300:
        api.accepted = True
        return response
    if status == 401:
        raise AuthFailed(f"{api.name} no longer accepts Aiemaily's access; please sign in again.", status=status)
    rate_limited = status == 403 and any(m in response.content for m in (b"rateLimitExceeded",
                                                                         b"userRateLimitExceeded"))
    if status in (429, 503) or rate_limited:
        # 429 / 503 / Gmail's rate-limit 403 mean the request was not processed.
        raise Transient(f"{api.name} is busy right now (HTTP {status}); trying again shortly.", status=status)
    if status >= 500:
        raise Ambiguous(f"{api.name} had an internal error (HTTP {status}).", status=status)
    reason = _refusal_reason(response)
    raise ProviderError(f"{api.name} refused to {what} (HTTP {status}{': ' + reason if reason else ''}).",
                        status=status)


def api_for(provider: str, token) -> ApiClient:
    return GmailApi(token) if provider == Connection.Provider.GMAIL else GraphApi(token)


def _reflect(owner_id, message: Message, **fields) -> None:
    with owner_scope(owner_id):
        Message.objects.for_owner(owner_id).filter(pk=message.pk).update(**fields)


def _gmail_modify(api, owner_id, message: Message, add: list[str], remove: list[str]) -> None:
    response = call_once(api, "POST", f"{_GMAIL_USER}/messages/{quote(message.provider_id, safe='')}/modify",
                         json={"addLabelIds": add, "removeLabelIds": remove}, what="change this message")
    labels = [str(label) for label in api.decode(response).get("labelIds") or []]
    name, role = mailbox(labels)
    folder = folder_row(owner_id, message.connection_id, name, role)
    _reflect(owner_id, message, labels=labels, unread="UNREAD" in labels, folder=folder)


def _gmail_label_ids(api, owner_id, connection_id, names: list[str], create: bool) -> list[str]:
    """Label ids for names (an id is accepted too). Missing labels are created when adding; the list
    is read first, so a create retried after a lost answer finds the label instead of failing."""
    labels = api.labels()
    by_name = {name.lower(): label_id for label_id, name in labels.items()}
    ids = []
    for name in names:
        label_id = name if name in labels else by_name.get(name.lower())
        if label_id is None and create:
            response = call_once(api, "POST", f"{_GMAIL_USER}/labels", what="create the label",
                                 json={"name": name, "labelListVisibility": "labelShow",
                                       "messageListVisibility": "show"})
            label_id = str(api.decode(response)["id"])
            labels[label_id] = name
        if label_id is not None:
            ids.append(label_id)
    merge_state(owner_id, connection_id, "gmail", {"labels": labels})  # names shown in the UI
    return ids


def gmail_apply(api, owner_id, message: Message, action: str, params: dict) -> None:
    """archive = INBOX removed; read = UNREAD removed/added; labels = user label ids."""
    if action == "archive":
        _gmail_modify(api, owner_id, message, [], ["INBOX"])
    elif action == "read":
        unread = bool(params["unread"])
        _gmail_modify(api, owner_id, message, ["UNREAD"] if unread else [], [] if unread else ["UNREAD"])
    elif action == "labels":
        add = _gmail_label_ids(api, owner_id, message.connection_id, params.get("add", []), create=True)
        remove = _gmail_label_ids(api, owner_id, message.connection_id, params.get("remove", []), create=False)
        _gmail_modify(api, owner_id, message, add, remove)
    else:
        raise ValueError(f"unknown action {action!r}")


def graph_apply(api, owner_id, message: Message, action: str, params: dict) -> None:
    """archive = move to the well-known `archive` folder; read = isRead; labels = categories."""
    path = f"/me/messages/{quote(message.provider_id, safe='')}"
    if action == "archive":
        response = call_once(api, "POST", f"{path}/move", json={"destinationId": "archive"},
                             what="archive this message")
        moved = api.decode(response)
        with owner_scope(owner_id):
            folder = Folder.objects.for_owner(owner_id).filter(connection_id=message.connection_id,
                                                               role="archive").first()
        folder = folder or folder_row(owner_id, message.connection_id, "Archive", "archive")
        # Immutable ids keep the id across a move; should Graph hand out a new one, follow it.
        _reflect(owner_id, message, folder=folder, provider_id=str(moved.get("id") or message.provider_id))
    elif action == "read":
        unread = bool(params["unread"])
        call_once(api, "PATCH", path, json={"isRead": not unread}, what="change this message")
        _reflect(owner_id, message, unread=unread)
    elif action == "labels":
        # Categories are one list: read the current one at Microsoft (ours may be behind), then set it.
        current = [str(c) for c in api.json("GET", path, params={"$select": "categories"}).get("categories") or []]
        remove = set(params.get("remove", []))
        wanted = [c for c in current if c not in remove]
        wanted += [c for c in params.get("add", []) if c not in wanted]
        response = call_once(api, "PATCH", path, json={"categories": wanted}, what="change this message")
        categories = api.decode(response).get("categories")
        _reflect(owner_id, message, labels=[str(c) for c in categories] if isinstance(categories, list) else wanted)
    else:
        raise ValueError(f"unknown action {action!r}")
