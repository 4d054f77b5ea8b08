"""A local Gmail API for the tests, speaking the documented JSON closely enough for google-auth's
AuthorizedSession, plus the HTTPS test-server base that tests/harness/graph_api_server.py shares.

HTTPS with a certificate from the test CA, a ThreadingHTTPServer in a thread; every request is
recorded (method, path, query, headers) and must carry `Authorization: Bearer <server.token>`,
else 401 as Google answers it. Tests mutate the mailbox between syncs: add, delete, relabel.

Gmail behaviour implemented (https://developers.google.com/gmail/api/reference/rest):
  GET /gmail/v1/users/me/profile              emailAddress, messagesTotal, historyId
  GET /gmail/v1/users/me/labels               system and user labels
  GET /gmail/v1/users/me/messages             maxResults (≤ 500), pageToken, includeSpamTrash, labelIds
  GET /gmail/v1/users/me/messages/{id}        format=raw (base64url, unpadded) | minimal; 404 if gone
  GET /gmail/v1/users/me/history              startHistoryId, historyTypes, maxResults, pageToken;
                                              records after the start id; 404 when it is older than
                                              the kept history (expire_history()); 400 when missing
  GET  …/messages?q=rfc822msgid:<id>          only the messages with that Message-ID header
  POST /gmail/v1/users/me/messages/send       {"raw": base64url RFC 5322}: stored with the SENT label,
                                              the Message-ID header kept as sent (as Gmail does)
  POST /gmail/v1/users/me/messages/{id}/modify  addLabelIds / removeLabelIds; 400 for an unknown label
  POST /gmail/v1/users/me/labels              {"name"}: a user label; 409 when the name exists
  POST /gmail/v1/users/me/watch               {"topicName", ...}: 400 without a topic; answers
                                              {"historyId", "expiration"} (ms, 7 days on); again renews
  POST /gmail/v1/users/me/stop                204; the watch ends
push_data() is the JSON Gmail publishes to the topic for the current history id (what a push carries).
Every change takes the next history id (monotonic); a message's historyId is its last change's.
Faults: fail(path_part, status, times) answers `status` to the next matching requests;
drop_answer(path_part, times) processes them but drops the connection instead of answering;
`token_budget = n` lets the token work for n more requests, then answers 401 (it expired).
"""

import base64
import json
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit

from tests.harness.https_server import Response, TLSServer, write_response


@dataclass
class Recorded:
    method: str
    path: str
    query: dict  # name -> list of values (historyTypes repeats)
    headers: dict
    raw_path: str = ""  # as sent, percent-encoded: ids may hold characters that need it
    body: bytes = b""  # POST/PATCH payload, as sent

    def json(self):
        return json.loads(self.body or b"null")

    def param(self, name: str, default=None):
        values = self.query.get(name)
        return values[0] if values else default


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stalls
    server: TLSServer

    def do_GET(self):
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Recorded(self.command, unquote(parts.path), parse_qs(parts.query, keep_blank_values=True),
                           {k.lower(): v for k, v in self.headers.items()}, parts.path, body)
        response = self.server.owner.handle(request)
        if response is None:
            # The request was processed, but the answer is lost on the way: the connection drops,
            # as when a worker or a proxy dies after the provider accepted a send.
            self.close_connection = True
            self.connection.close()
            return
        write_response(self, response)

    do_POST = do_PATCH = do_DELETE = do_GET

    def log_message(self, *args):  # the recorded requests are the log
        pass


class HttpsFake:
    """HTTPS server base: bearer check, request log, injected faults; subclasses route()."""

    path_prefix = ""

    def __init__(self, ca):
        self._server = TLSServer(self, ca, _Handler).start()
        self.origin = f"https://127.0.0.1:{self._server.server_address[1]}"
        self.base = self.origin + self.path_prefix
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.token = f"test-access-{uuid.uuid4().hex}"
            self.requests: list[Recorded] = []
            self.faults: list[list] = []
            self.token_budget: int | None = None  # requests the token is good for; then 401 (it expired)
            self.accepts = None  # or a function deciding which bearer tokens are good (a real token issuer's)
            self.drop_answers: list[list] = []  # [path_part, times]: process the request, then drop the reply

    def stop(self) -> None:
        self._server.stop()

    def fail(self, path_part: str, status: int, times: int = 1, headers: dict | None = None,
             reason: str = "backendError") -> None:
        """Answer `status` (with `reason` in the error body) to the next `times` requests whose path
        contains `path_part`."""
        with self.lock:
            self.faults.append([path_part, status, times, headers or {}, reason])

    def drop_answer(self, path_part: str, times: int = 1) -> None:
        """Process the next `times` matching requests, then close the connection without answering."""
        with self.lock:
            self.drop_answers.append([path_part, times])

    def seen(self, path_part: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if path_part in r.path]

    def handle(self, request: Recorded) -> Response | None:
        with self.lock:
            self.requests.append(request)
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme != "Bearer" or not (self.accepts(token) if self.accepts else token == self.token):
                return self.unauthorized()
            if self.token_budget is not None:
                self.token_budget -= 1
                if self.token_budget < 0:
                    return self.unauthorized()
            for fault in self.faults:
                if fault[0] in request.path and fault[2] > 0:
                    fault[2] -= 1
                    return Response.json(fault[1], {"error": {"code": fault[1], "message": "injected",
                                                              "errors": [{"reason": fault[4]}]}}, **fault[3])
            try:
                response = self.route(request)
            except Exception as exc:  # noqa: BLE001 - a fake's bug shows up as a 500 the test sees
                return Response.json(500, {"error": {"code": 500, "message": repr(exc)}})
            for drop in self.drop_answers:
                if drop[0] in request.path and drop[1] > 0:
                    drop[1] -= 1
                    return None
            return response

    def unauthorized(self) -> Response:
        raise NotImplementedError

    def route(self, request: Recorded) -> Response:
        raise NotImplementedError


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class GmailMessage:
    id: str
    thread_id: str
    raw: bytes
    labels: list[str]
    internal_date: int
    history_id: int
    raw_override: str | None = None  # sent instead of the base64url of `raw` (a broken payload)


SYSTEM_LABELS = ("INBOX", "SENT", "DRAFT", "SPAM", "TRASH", "UNREAD", "STARRED", "IMPORTANT", "CATEGORY_PERSONAL")


def _header(raw: bytes, name: str) -> str:
    from email import message_from_bytes

    return str(message_from_bytes(raw).get(name, "") or "").strip()


def _message_id(raw: bytes) -> str:
    return _header(raw, "Message-ID")


def _gmail_error(status: int, message: str, reason: str) -> Response:
    statuses = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND"}
    return Response.json(status, {"error": {"code": status, "message": message, "status": statuses.get(status, ""),
                                            "errors": [{"message": message, "domain": "global", "reason": reason}]}})


class FakeGmail(HttpsFake):
    """One Gmail mailbox (users/me)."""

    USER = "/gmail/v1/users/me"

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.email = "ada@gmail.test"
            self.messages: dict[str, GmailMessage] = {}
            self.history: list[dict] = []  # records in history order
            self.history_id = 1000 + len(uuid.uuid4().hex)  # not 0: real ids are large numbers
            self.oldest_history = self.history_id
            self.user_labels = {"Label_1": "Work", "Label_2": "Receipts"}
            self._next = 0
            self.watch: dict | None = None  # {"topicName", "expiration" (ms)} while watched
            self.watch_calls = 0

    # --- mutations (what the user does in Gmail) -----------------------------------------------------

    def _record(self, kind: str, message: GmailMessage, label_ids=None) -> None:
        self.history_id += 1
        message.history_id = self.history_id
        entry = {"message": {"id": message.id, "threadId": message.thread_id, "labelIds": list(message.labels)}}
        if label_ids is not None:
            entry["labelIds"] = list(label_ids)
        self.history.append({"id": self.history_id, "kind": kind, "entry": entry})

    def add(self, raw: bytes, labels=("INBOX", "UNREAD"), raw_override: str | None = None) -> str:
        with self.lock:
            self._next += 1
            message_id = f"18c{self._next:013x}"
            message = GmailMessage(message_id, f"t{message_id}", raw, list(labels), 1_767_000_000_000 + self._next,
                                   0, raw_override)
            self.messages[message_id] = message
            self._record("messageAdded", message)
            return message_id

    def delete(self, message_id: str) -> None:
        with self.lock:
            message = self.messages.pop(message_id)
            self._record("messageDeleted", message)

    def relabel(self, message_id: str, add=(), remove=()) -> None:
        with self.lock:
            message = self.messages[message_id]
            added = [label for label in add if label not in message.labels]
            removed = [label for label in remove if label in message.labels]
            message.labels = [label for label in message.labels if label not in removed] + added
            if added:
                self._record("labelAdded", message, added)
            if removed:
                self._record("labelRemoved", message, removed)

    def push_data(self) -> dict:
        """What Gmail publishes to the watch's topic after a change: the address and the history id."""
        with self.lock:
            return {"emailAddress": self.email, "historyId": self.history_id}

    def expire_history(self) -> None:
        """Forget every history record so far: older start ids answer 404, as after ~a week."""
        with self.lock:
            self.oldest_history = self.history_id

    # --- API -----------------------------------------------------------------------------------------

    def unauthorized(self) -> Response:
        response = _gmail_error(401, "Request had invalid authentication credentials.", "authError")
        response.headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
        return response

    def route(self, request: Recorded) -> Response:
        if not request.path.startswith(self.USER + "/"):
            return _gmail_error(404, "Not Found", "notFound")
        rest = request.path[len(self.USER) + 1:]
        if request.method == "POST":
            return self._post(request, rest)
        if request.method != "GET":
            return _gmail_error(404, "Not Found", "notFound")
        if rest == "profile":
            return Response.json(200, {"emailAddress": self.email, "messagesTotal": len(self.messages),
                                       "threadsTotal": len(self.messages), "historyId": str(self.history_id)})
        if rest == "labels":
            return Response.json(200, {"labels": self._labels()})
        if rest == "messages":
            return self._list(request)
        if rest.startswith("messages/"):
            return self._get(request, rest[len("messages/"):])
        if rest == "history":
            return self._history(request)
        return _gmail_error(404, "Not Found", "notFound")

    def sent_with(self, message_id: str) -> list[GmailMessage]:
        """The messages in SENT carrying this Message-ID header: what a test counts."""
        with self.lock:
            return [m for m in self.messages.values() if "SENT" in m.labels and _message_id(m.raw) == message_id]

    def _post(self, request: Recorded, rest: str) -> Response:
        body = request.json() or {}
        if rest == "messages/send":
            raw = body.get("raw")
            if not isinstance(raw, str) or not raw:
                return _gmail_error(400, "'raw' RFC822 payload message string or uploading message via /upload/* "
                                         "URL required", "invalidArgument")
            data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
            if not _header(data, "To") and not _header(data, "Cc") and not _header(data, "Bcc"):
                return _gmail_error(400, "Recipient address required", "invalidArgument")
            message_id = self.add(data, labels=["SENT"])
            message = self.messages[message_id]
            return Response.json(200, {"id": message.id, "threadId": message.thread_id, "labelIds": ["SENT"]})
        if rest == "watch":
            topic = body.get("topicName")
            if not isinstance(topic, str) or not topic.startswith("projects/"):
                return _gmail_error(400, "Invalid topicName does not match projects/*/topics/*", "invalidArgument")
            import time

            self.watch_calls += 1
            self.watch = {"topicName": topic, "expiration": int(time.time() * 1000) + 7 * 86400 * 1000}
            return Response.json(200, {"historyId": str(self.history_id), "expiration": str(self.watch["expiration"])})
        if rest == "stop":
            self.watch = None
            return Response(204)
        if rest == "labels":
            name = str(body.get("name") or "").strip()
            if not name:
                return _gmail_error(400, "Invalid label name", "invalidArgument")
            known = {v.lower() for v in self.user_labels.values()} | {s.lower() for s in SYSTEM_LABELS}
            if name.lower() in known:
                return _gmail_error(409, "Label name exists or conflicts", "failedPrecondition")
            label_id = f"Label_{len(self.user_labels) + 1 + self._next}"
            self.user_labels[label_id] = name
            return Response.json(200, {"id": label_id, "name": name, "type": "user",
                                       "messageListVisibility": "show", "labelListVisibility": "labelShow"})
        if rest.startswith("messages/") and rest.endswith("/modify"):
            message = self.messages.get(rest[len("messages/"):-len("/modify")])
            if message is None:
                return _gmail_error(404, "Requested entity was not found.", "notFound")
            add, remove = list(body.get("addLabelIds") or []), list(body.get("removeLabelIds") or [])
            valid = set(SYSTEM_LABELS) | set(self.user_labels)
            if any(label not in valid for label in add + remove):
                return _gmail_error(400, "Invalid label", "invalidArgument")
            self.relabel(message.id, add=add, remove=remove)
            return Response.json(200, {"id": message.id, "threadId": message.thread_id,
                                       "labelIds": list(message.labels)})
        return _gmail_error(404, "Not Found", "notFound")

    def _labels(self) -> list[dict]:
        return [{"id": s, "name": s, "type": "system"} for s in SYSTEM_LABELS] + [
            {"id": k, "name": v, "type": "user"} for k, v in self.user_labels.items()]

    @staticmethod
    def _page(items: list, request: Recorded, default: int, maximum: int) -> tuple[list, str | None]:
        size = max(1, min(int(request.param("maxResults", default)), maximum))
        offset = int(base64.urlsafe_b64decode(request.param("pageToken")).decode()) if request.param(
            "pageToken") else 0
        chunk = items[offset:offset + size]
        more = offset + size < len(items)
        return chunk, base64.urlsafe_b64encode(str(offset + size).encode()).decode() if more else None

    def _list(self, request: Recorded) -> Response:
        everything = request.param("includeSpamTrash", "false") == "true"
        wanted = set(request.query.get("labelIds") or [])  # every one of them (AND), as Gmail does
        query = request.param("q", "")
        wanted_id = query[len("rfc822msgid:"):].strip() if query.startswith("rfc822msgid:") else None
        listed = [m for m in sorted(self.messages.values(), key=lambda m: -m.internal_date)
                  if (everything or not {"SPAM", "TRASH"} & set(m.labels)) and wanted <= set(m.labels)
                  and (wanted_id is None or _message_id(m.raw) in (wanted_id, f"<{wanted_id.strip('<>')}>"))]
        chunk, token = self._page(listed, request, 100, 500)
        payload = {"resultSizeEstimate": len(listed)}
        if chunk:
            payload["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in chunk]
        if token:
            payload["nextPageToken"] = token
        return Response.json(200, payload)

    def _get(self, request: Recorded, message_id: str) -> Response:
        message = self.messages.get(message_id)
        if message is None:
            return _gmail_error(404, "Requested entity was not found.", "notFound")
        payload = {"id": message.id, "threadId": message.thread_id, "labelIds": list(message.labels),
                   "snippet": "", "historyId": str(message.history_id), "internalDate": str(message.internal_date),
                   "sizeEstimate": len(message.raw)}
        if request.param("format", "full") == "raw":
            payload["raw"] = message.raw_override if message.raw_override is not None else b64url(message.raw)
        return Response.json(200, payload)

    def _history(self, request: Recorded) -> Response:
        start = request.param("startHistoryId", "")
        if not start.isdigit():
            return _gmail_error(400, "Invalid startHistoryId", "invalidArgument")
        if int(start) < self.oldest_history:
            return _gmail_error(404, "Requested entity was not found.", "notFound")
        kinds = set(request.query.get("historyTypes") or ["messageAdded", "messageDeleted", "labelAdded",
                                                          "labelRemoved"])
        records = [r for r in self.history if r["id"] > int(start) and r["kind"] in kinds]
        chunk, token = self._page(records, request, 100, 500)
        names = {"messageAdded": "messagesAdded", "messageDeleted": "messagesDeleted",
                 "labelAdded": "labelsAdded", "labelRemoved": "labelsRemoved"}
        history = [{"id": str(r["id"]), "messages": [{"id": r["entry"]["message"]["id"],
                                                      "threadId": r["entry"]["message"]["threadId"]}],
                    names[r["kind"]]: [r["entry"]]} for r in chunk]
        payload = {"historyId": str(self.history_id)}
        if history:
            payload["history"] = history
        if token:
            payload["nextPageToken"] = token
        return Response.json(200, payload)
