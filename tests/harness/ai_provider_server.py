"""A local AI provider for tests: OpenAI chat completions and Anthropic messages, on the wire.

Speaks both documented formats, streaming (text/event-stream) or not, so the real adapters in
mail/assistant/providers.py run unmodified. Every request is recorded (path, headers, body) for
assertions such as "the key arrived only in Authorization". `behaviour` makes it misbehave:
status codes with Retry-After, a malformed or cut-off stream, a stall past the client's timeout.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class AiProviderServer:
    def __init__(self):
        self.requests: list[dict] = []
        self.reply = "A short answer."
        self.behaviour = "stream"  # stream | json | status:<code>[:<retry-after>] | malformed | cutoff | stall
        self.delay = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                server.requests.append({"path": self.path, "headers": dict(self.headers.items()),
                                        "raw": body, "body": json.loads(body or b"{}")})
                if server.delay:
                    time.sleep(server.delay)
                kind = "anthropic" if self.path.endswith("/v1/messages") else "openai"
                behaviour = server.behaviour
                if behaviour.startswith("status:"):
                    _, code, *retry = behaviour.split(":")
                    payload = json.dumps({"error": {"type": "error", "message": "nope (echoes sk-...1234)"}}).encode()
                    self.send_response(int(code))
                    if retry:
                        self.send_header("Retry-After", retry[0])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if behaviour == "json":
                    payload = (_openai_whole if kind == "openai" else _anthropic_whole)(server.reply)
                    data = json.dumps(payload).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                events = (_openai_events if kind == "openai" else _anthropic_events)(server.reply)
                if behaviour == "malformed":
                    events = events[:2] + ["data: {not json\n\n"]
                elif behaviour == "cutoff":
                    events = events[:-2]
                for event in events:
                    if behaviour == "stall":
                        time.sleep(5)
                    self.wfile.write(event.encode())
                    self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def openai_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _chunks(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def _openai_events(text: str) -> list[str]:
    events = [": keep-alive comment\n\n"]
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "test-model"}
    events.append("data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}) + "\n\n")
    for piece in _chunks(text):
        # One event's JSON over two data: lines (the second without the optional space), CRLF endings:
        # all allowed by the SSE format, and the client must join them back.
        blob = json.dumps({**base, "choices": [{"index": 0, "delta": {"content": piece}}]})
        events.append("data: " + blob.replace(', "choices"', ',\r\ndata:"choices"', 1) + "\r\n\r\n")
    events.append("data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                  + "\n\n")
    events.append("data: [DONE]\n\n")
    return events


def _anthropic_events(text: str) -> list[str]:
    def ev(name, payload):
        return f"event: {name}\ndata: {json.dumps(payload)}\n\n"

    events = [ev("message_start", {"type": "message_start", "message": {"id": "msg_1", "role": "assistant",
                                                                        "content": [], "model": "test-model"}}),
              ev("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}}),
              ev("ping", {"type": "ping"})]
    for piece in _chunks(text):
        events.append(ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                 "delta": {"type": "text_delta", "text": piece}}))
    events += [ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                    "usage": {"output_tokens": 5}}),
               ev("message_stop", {"type": "message_stop"})]
    return events


def _openai_whole(text: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "test-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


def _anthropic_whole(text: str) -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "test-model",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}
