"""A local Microsoft Graph (v1.0 mail) for the tests, speaking the documented JSON of folders, message
delta queries and raw MIME: HTTPS from the test CA, bearer token checked, every request recorded
(tests/gmail_api_server.HttpsFake). Tests change the mailbox between syncs: add, delete, move,
mark read, categorise, create and delete folders, and expire delta tokens.

Graph behaviour implemented (https://learn.microsoft.com/graph/delta-query-messages):
  GET /v1.0/me/mailFolders                       top-level folders ($top, $select; @odata.nextLink)
  GET /v1.0/me/mailFolders/{id}/childFolders     child folders
  GET /v1.0/me/mailFolders/{id | well-known}     one folder (inbox, sentitems, drafts, deleteditems,
                                                 junkemail, archive); 404 ErrorItemNotFound
  GET /v1.0/me/mailFolders/{id}/messages/delta   initial round ($select), pages of
                                                 `Prefer: odata.maxpagesize` (default 10) linked by
                                                 @odata.nextLink ($skiptoken), the last one with
                                                 @odata.deltaLink ($deltatoken); a round from a
                                                 delta token lists what changed in the folder since
                                                 (current properties) and `@removed` entries;
                                                 410 SyncStateNotFound once tokens are expired
  GET /v1.0/me/messages/{id}/$value              the MIME content
  GET /v1.0/me/messages/{id}                     one message ($select)
  PATCH /v1.0/me/messages/{id}                   isRead, categories
  POST /v1.0/me/messages/{id}/move               {"destinationId": id | well-known name} → 201 the message
  POST /v1.0/me/sendMail                         text/plain base64 MIME (Graph's MIME send) → 202, the
                                                 message saved in Sent Items with its own Message-ID;
                                                 400 ErrorMimeContentInvalidBase64String otherwise
  GET /v1.0/me/mailFolders/{f}/messages          $filter=internetMessageId eq '<id>' only
  POST   /v1.0/subscriptions                    changeType, notificationUrl, resource, expirationDateTime
                                                 (≤ 4,230 minutes on, else 400), clientState (≤ 128);
                                                 with `handshake = True` the notification URL is sent
                                                 Graph's validation request first (200 text/plain echo
                                                 within 10 s, else 400) → 201 the subscription
  PATCH  /v1.0/subscriptions/{id}               a new expirationDateTime (same cap); 404 when unknown
  DELETE /v1.0/subscriptions/{id}               204; 404 when unknown
notification() / lifecycle() build the items Graph would post for a subscription, real clientState in.
Ids are opaque base64-like strings with '=' and '-', as Graph's are; they stay the same when a
message moves (as with Prefer: IdType="ImmutableId").
"""

import base64
import json
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlencode

from tests.harness.gmail_api_server import HttpsFake, Recorded, Response

ROOT = "msgfolderroot"
WELL_KNOWN = {"inbox": "Inbox", "sentitems": "Sent Items", "drafts": "Drafts", "deleteditems": "Deleted Items",
              "junkemail": "Junk Email", "archive": "Archive"}


@dataclass
class GraphMessage:
    id: str
    folder: str
    raw: bytes
    is_read: bool = False
    categories: list = field(default_factory=list)
    conversation: str = ""
    received: str = "2026-11-02T10:00:00Z"
    internet_id: str = ""  # the Message-ID header of a sent message (others get a made-up one)


def _error(status: int, code: str, message: str) -> Response:
    return Response.json(status, {"error": {"code": code, "message": message,
                                            "innerError": {"request-id": str(uuid.uuid4())}}})


def _encode(payload: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _decode(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


class FakeGraph(HttpsFake):
    """One Outlook mailbox (/me)."""

    path_prefix = "/v1.0"

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self._n = 0
            self.folders: dict[str, dict] = {}
            self.well_known: dict[str, str] = {}
            self.messages: dict[str, GraphMessage] = {}
            self.events: list[tuple[int, str, str]] = []  # (seq, folder id, message id)
            self.seq = 0
            self.epoch = 0
            self.rounds: dict[str, dict] = {}
            self.link_origin = None  # tests set another origin to hand out foreign links
            self.subscriptions: dict[str, dict] = {}
            self.handshake = False  # True: creating a subscription validates the notification URL
            for alias, name in WELL_KNOWN.items():
                self.well_known[alias] = self.add_folder(name)

    def _id(self, kind: str) -> str:
        self._n += 1
        return f"AAMk{kind}{uuid.uuid4().hex[:12]}-{self._n:04d}AAA="

    # --- mutations -----------------------------------------------------------------------------------

    def _changed(self, folder: str, message_id: str) -> None:
        self.seq += 1
        self.events.append((self.seq, folder, message_id))

    def add_folder(self, name: str, parent: str | None = None) -> str:
        with self.lock:
            folder_id = self._id("F")
            self.folders[folder_id] = {"id": folder_id, "displayName": name, "parentFolderId": parent or ROOT}
            return folder_id

    def remove_folder(self, folder_id: str) -> None:
        with self.lock:
            del self.folders[folder_id]
            for message_id in [m.id for m in self.messages.values() if m.folder == folder_id]:
                del self.messages[message_id]

    def folder(self, alias_or_id: str) -> str:
        return self.well_known.get(alias_or_id, alias_or_id)

    def add(self, folder: str, raw: bytes, *, is_read=False, categories=()) -> str:
        with self.lock:
            message = GraphMessage(self._id("M"), self.folder(folder), raw, is_read, list(categories),
                                   conversation=f"conv-{self._n}")
            self.messages[message.id] = message
            self._changed(message.folder, message.id)
            return message.id

    def delete(self, message_id: str) -> None:
        with self.lock:
            message = self.messages.pop(message_id)
            self._changed(message.folder, message_id)

    def move(self, message_id: str, folder: str) -> None:
        with self.lock:
            message = self.messages[message_id]
            source, message.folder = message.folder, self.folder(folder)
            self._changed(source, message_id)
            self._changed(message.folder, message_id)

    def update(self, message_id: str, *, is_read=None, categories=None) -> None:
        with self.lock:
            message = self.messages[message_id]
            if is_read is not None:
                message.is_read = is_read
            if categories is not None:
                message.categories = list(categories)
            self._changed(message.folder, message_id)

    def expire_delta_tokens(self) -> None:
        with self.lock:
            self.epoch += 1

    # --- API -----------------------------------------------------------------------------------------

    def unauthorized(self) -> Response:
        response = _error(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")
        response.headers["WWW-Authenticate"] = 'Bearer realm="", error="invalid_token"'
        return response

    # --- subscriptions (change notifications) ---------------------------------------------------------

    CAP_MINUTES = 4230

    def notification(self, subscription_id: str, message_id: str, change_type: str = "created",
                     client_state: str | None = None) -> dict:
        """One change-notification item, as Graph posts it for this subscription."""
        with self.lock:
            sub = self.subscriptions[subscription_id]
            return {"subscriptionId": subscription_id, "subscriptionExpirationDateTime": sub["expirationDateTime"],
                    "changeType": change_type, "resource": f"Users/{uuid.uuid4()}/Messages/{message_id}",
                    "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id":
                                     f"Users/x/Messages/{message_id}", "@odata.etag": f'W/"{self.seq}"',
                                     "id": message_id},
                    "clientState": sub["clientState"] if client_state is None else client_state,
                    "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95"}

    def lifecycle(self, subscription_id: str, event: str, client_state: str | None = None) -> dict:
        with self.lock:
            sub = self.subscriptions[subscription_id]
            return {"subscriptionId": subscription_id, "subscriptionExpirationDateTime": sub["expirationDateTime"],
                    "lifecycleEvent": event, "resource": sub["resource"],
                    "clientState": sub["clientState"] if client_state is None else client_state,
                    "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95"}

    def _expiry_ok(self, value) -> bool:
        from datetime import UTC, datetime, timedelta

        try:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return False
        now = datetime.now(UTC)
        return when.tzinfo is not None and now < when <= now + timedelta(minutes=self.CAP_MINUTES)

    def _validate_endpoint(self, url: str) -> bool:
        import requests

        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        try:
            answer = requests.post(url, params={"validationToken": token}, data=b"",
                                   headers={"Content-Type": "text/plain; charset=utf-8"}, timeout=10)
        except requests.RequestException:
            return False
        return (answer.status_code == 200 and answer.headers.get("Content-Type", "").startswith("text/plain")
                and answer.text == token)

    def _subscriptions(self, request: Recorded, rest: list[str]) -> Response:
        missing = _error(404, "ResourceNotFound", "The object was not found.")
        body = request.json() if request.body else {}
        if request.method == "POST" and not rest:
            url, state = body.get("notificationUrl"), body.get("clientState")
            if not isinstance(url, str) or not url or body.get("resource") != "me/messages" \
                    or not body.get("changeType") or not (isinstance(state, str) and 0 < len(state) <= 128):
                return _error(400, "InvalidRequest", "Invalid subscription request.")
            if not self._expiry_ok(body.get("expirationDateTime")):
                return _error(400, "InvalidRequest", "Subscription expiration can only be 4230 minutes in the future.")
            if self.handshake and not self._validate_endpoint(url):
                return _error(400, "InvalidRequest", "Subscription validation request failed. Notification endpoint "
                                                     "must respond with 200 OK to validation request.")
            sub = {"id": str(uuid.uuid4()), "resource": body["resource"], "changeType": body["changeType"],
                   "notificationUrl": url, "lifecycleNotificationUrl": body.get("lifecycleNotificationUrl"),
                   "expirationDateTime": body["expirationDateTime"], "clientState": state}
            self.subscriptions[sub["id"]] = sub
            return Response.json(201, sub)
        if len(rest) != 1 or rest[0] not in self.subscriptions:
            return missing
        if request.method == "PATCH":
            if not self._expiry_ok(body.get("expirationDateTime")):
                return _error(400, "InvalidRequest", "Subscription expiration can only be 4230 minutes in the future.")
            self.subscriptions[rest[0]]["expirationDateTime"] = body["expirationDateTime"]
            return Response.json(200, self.subscriptions[rest[0]])
        if request.method == "DELETE":
            del self.subscriptions[rest[0]]
            return Response(204)
        return Response.json(200, self.subscriptions[rest[0]])

    def route(self, request: Recorded) -> Response:
        segments = [unquote(s) for s in request.raw_path.split("/")[1:]]
        if segments[:2] == ["v1.0", "subscriptions"]:
            return self._subscriptions(request, [s for s in segments[2:] if s])
        if segments[:2] != ["v1.0", "me"]:
            return _error(404, "UnknownError", "no such resource")
        rest = segments[2:]
        if request.method in ("POST", "PATCH"):
            return self._write(request, rest)
        if request.method != "GET":
            return _error(405, "ErrorInvalidRequest", "method not allowed")
        if len(rest) == 3 and rest[0] == "mailFolders" and rest[2] == "messages":
            return self._filter(request, self.folder(rest[1]))
        if len(rest) == 2 and rest[0] == "messages":
            message = self.messages.get(rest[1])
            if message is None:
                return _error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            return Response.json(200, self._item(message, [s for s in request.param("$select", "").split(",") if s]))
        if rest == ["mailFolders"]:
            return self._folder_list(request, ROOT, "/me/mailFolders")
        if len(rest) == 3 and rest[0] == "mailFolders" and rest[2] == "childFolders":
            return self._folder_list(request, rest[1], f"/me/mailFolders/{quote(rest[1], safe='')}/childFolders")
        if len(rest) == 2 and rest[0] == "mailFolders":
            folder = self.folders.get(self.folder(rest[1]))
            return Response.json(200, self._folder_json(folder)) if folder else _error(
                404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if len(rest) == 4 and rest[0] == "mailFolders" and rest[2:] == ["messages", "delta"]:
            return self._delta(request, self.folder(rest[1]))
        if len(rest) == 3 and rest[0] == "messages" and rest[2] == "$value":
            message = self.messages.get(rest[1])
            if message is None:
                return _error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            return Response(200, message.raw, {"Content-Type": "text/plain"})
        return _error(404, "UnknownError", "no such resource")

    def sent_with(self, message_id: str) -> list[GraphMessage]:
        """The messages in Sent Items with this Message-ID: what a test counts."""
        with self.lock:
            sent = self.well_known["sentitems"]
            return [m for m in self.messages.values() if m.folder == sent and m.internet_id == message_id]

    def _write(self, request: Recorded, rest: list[str]) -> Response:
        from email import message_from_bytes

        missing = _error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if request.method == "POST" and rest == ["sendMail"]:
            if not request.headers.get("content-type", "").startswith("text/plain"):
                return _error(400, "ErrorInvalidRequest", "Only the MIME send is implemented here.")
            try:
                raw = base64.b64decode(request.body, validate=True)
            except ValueError:
                return _error(400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.")
            parsed = message_from_bytes(raw)
            if not (parsed.get("To") or parsed.get("Cc") or parsed.get("Bcc")):
                return _error(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
            with self.lock:
                message_id = self.add("sentitems", raw, is_read=True)
                self.messages[message_id].internet_id = str(parsed.get("Message-ID") or "").strip()
            return Response(202)
        if len(rest) == 3 and rest[0] == "messages" and rest[2] == "move" and request.method == "POST":
            message = self.messages.get(rest[1])
            target = self.folder(str((request.json() or {}).get("destinationId") or ""))
            if message is None or target not in self.folders:
                return missing
            self.move(message.id, target)
            return Response.json(201, self._item(message, []))
        if len(rest) == 2 and rest[0] == "messages" and request.method == "PATCH":
            message = self.messages.get(rest[1])
            if message is None:
                return missing
            body = request.json() or {}
            if "categories" in body and not isinstance(body["categories"], list):
                return _error(400, "ErrorInvalidRequest", "categories must be a collection.")
            self.update(message.id, is_read=body.get("isRead"), categories=body.get("categories"))
            return Response.json(200, self._item(message, []))
        return _error(404, "UnknownError", "no such resource")

    def _filter(self, request: Recorded, folder_id: str) -> Response:
        if folder_id not in self.folders:
            return _error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        wanted = request.param("$filter", "")
        prefix = "internetMessageId eq '"
        if not (wanted.startswith(prefix) and wanted.endswith("'")):
            return _error(400, "ErrorInvalidUrlQueryFilter", "Only internetMessageId eq '…' is implemented.")
        value = wanted[len(prefix):-1].replace("''", "'")
        found = [self._item(m, ["internetMessageId"]) for m in self.messages.values()
                 if m.folder == folder_id and m.internet_id == value]
        return Response.json(200, {"value": found})

    def _folder_json(self, folder: dict) -> dict:
        inside = [m for m in self.messages.values() if m.folder == folder["id"]]
        children = [f for f in self.folders.values() if f["parentFolderId"] == folder["id"]]
        return {**folder, "childFolderCount": len(children), "totalItemCount": len(inside),
                "unreadItemCount": sum(1 for m in inside if not m.is_read), "isHidden": False}

    def _link(self, path: str, query: dict) -> str:
        return f"{self.link_origin or self.origin}{self.path_prefix}{path}?{urlencode(query, safe='$')}"

    def _folder_list(self, request: Recorded, parent: str, path: str) -> Response:
        if parent != ROOT and parent not in self.folders:
            return _error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        listed = [self._folder_json(f) for f in self.folders.values() if f["parentFolderId"] == parent]
        top, skip = int(request.param("$top", 10)), int(request.param("$skip", 0))
        payload = {"@odata.context": f"{self.base}/$metadata#users('me')/mailFolders", "value": listed[skip:skip + top]}
        if skip + top < len(listed):
            payload["@odata.nextLink"] = self._link(path, {"$top": top, "$skip": skip + top})
        return Response.json(200, payload)

    @staticmethod
    def _page_size(request: Recorded) -> int:
        for preference in request.headers.get("prefer", "").split(","):
            name, _, value = preference.strip().partition("=")
            if name == "odata.maxpagesize" and value.isdigit():
                return int(value)
        return 10

    def _item(self, message: GraphMessage, select: list[str]) -> dict:
        full = {"@odata.type": "#microsoft.graph.message", "@odata.etag": f'W/"{message.id[-8:]}{self.seq}"',
                "id": message.id, "isRead": message.is_read, "categories": list(message.categories),
                "conversationId": message.conversation,
                "internetMessageId": message.internet_id or f"<{message.id[-12:]}@outlook.test>",
                "receivedDateTime": message.received, "parentFolderId": message.folder,
                "subject": "(subject)", "bodyPreview": "(preview)"}
        keep = {"@odata.type", "@odata.etag", "id", *select} if select else set(full)
        return {k: v for k, v in full.items() if k in keep}

    def _delta(self, request: Recorded, folder_id: str) -> Response:
        if folder_id not in self.folders:
            return _error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        path = f"/me/mailFolders/{quote(folder_id, safe='')}/messages/delta"
        if request.param("$skiptoken"):
            state = self.rounds.get(request.param("$skiptoken"))
            if state is None or state["epoch"] != self.epoch:
                return _error(410, "SyncStateNotFound", "The sync state generation is not found.")
        else:
            state = self._start_round(request, folder_id)
            if state is None:
                return _error(410, "SyncStateNotFound", "The sync state generation is not found.")
        size = self._page_size(request)
        chunk = state["items"][state["offset"]:state["offset"] + size]
        state["offset"] += size
        payload = {"@odata.context": f"{self.base}/$metadata#Collection(message)", "value": chunk}
        if state["offset"] < len(state["items"]):
            token = uuid.uuid4().hex
            self.rounds[token] = state
            payload["@odata.nextLink"] = self._link(path, {"$skiptoken": token})
        else:
            delta = _encode({"folder": folder_id, "seq": state["seq"], "epoch": self.epoch, "select": state["select"]})
            payload["@odata.deltaLink"] = self._link(path, {"$deltatoken": delta})
        return Response.json(200, payload)

    def _start_round(self, request: Recorded, folder_id: str) -> dict | None:
        if request.param("$deltatoken"):
            token = _decode(request.param("$deltatoken"))
            if token["epoch"] != self.epoch or token["folder"] != folder_id:
                return None
            select = token["select"]
            changed = list(dict.fromkeys(m for seq, f, m in self.events if seq > token["seq"] and f == folder_id))
            items = []
            for message_id in changed:
                message = self.messages.get(message_id)
                if message is not None and message.folder == folder_id:
                    items.append(self._item(message, select))
                else:
                    items.append({"@odata.type": "#microsoft.graph.message", "id": message_id,
                                  "@removed": {"reason": "deleted"}})
        else:
            select = [s for s in (request.param("$select") or "").split(",") if s]
            items = [self._item(m, select) for m in self.messages.values() if m.folder == folder_id]
        return {"items": items, "offset": 0, "seq": self.seq, "epoch": self.epoch, "select": select}
