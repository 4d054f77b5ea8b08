"""Real-world MIME as a mail client shows it: text/plain parts with a file name are text, broken
multiparts keep their text with a "malformed" note, attachments are listed (name, type, size) and
downloaded only by their owner; UTF-8 addresses (RFC 6532) never make parse() raise, display as
written, and one unreadable message never stops a mailbox: it is listed with why, the batch goes on.

CPython's own e-mail test corpus (Lib/test/test_email/data) is used when the interpreter ships it;
the same shapes are also built here, so the tests prove the point on any machine.
"""

import importlib.util
from pathlib import Path

import pytest

from aiemaily.ownership.binding import owner_scope
from mail.models import Message
from mail.parsing import attachment, body_parts, parse
from tests.harness.cross_owner import assert_cross_owner_404
from tests.harness.mailservers import sample_messages
from tests.mail.test_sync_imap import _sync, connected, objects_dir  # noqa: F401 - fixtures


def _corpus() -> Path | None:
    spec = importlib.util.find_spec("test.test_email")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return data if (data / "msg_04.txt").exists() else None


CORPUS = _corpus()

# The shapes of msg_04/msg_44 (text/plain with a file name), msg_17/msg_31 (start boundary not
# found), msg_41 (a multipart without a boundary), built so the tests do not depend on the corpus.
BUILT = {
    "inline_text_with_filename": (
        b"From: a@example.test\r\nSubject: a simple multipart\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n"
        b"Content-Disposition: inline; filename=\"msg.txt\"\r\n\r\na simple kind of mirror\r\n"
        b"--B\r\nContent-Type: text/plain; name=\"msg2.txt\"\r\n\r\nto reflect upon our own\r\n--B--\r\n",
        ["a simple kind of mirror", "to reflect upon our own"], ""),
    "start_boundary_not_found": (
        b"From: a@example.test\r\nSubject: dingus\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"BOUNDARY\"\r\n\r\nHi there,\r\n\r\nThis is the dingus fish.\r\n",
        ["This is the dingus fish."], "StartBoundaryNotFound"),
    "wrong_boundary": (
        b"From: a@example.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BOUNDARY_\r\n\r\n"
        b"--BOUNDARY\r\nContent-Type: text/plain\r\n\r\nmessage 1\r\n\r\n--BOUNDARY--\r\n",
        ["message 1"], "StartBoundaryNotFound"),
    "no_boundary": (
        b"From: a@example.test\r\nSubject: 64423\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n\r\n"
        b"Blah blah blah\r\n", ["Blah blah blah"], "NoBoundaryInMultipart"),
}

UTF8_ADDRESSES = (
    "From: Jöran Müller <jöran@bücher.example>\r\nTo: \"李, 小龙\" <李@例え.jp>, plain@example.test\r\n"
    "Cc: =?utf-8?q?Ren=C3=A9e?= <renee@example.test>\r\nSubject: Grüße aus Köln\r\n"
    "Message-ID: <intl-1@bücher.example>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n\r\nHallo, schöne Grüße.\r\n"
).encode()

WITH_ATTACHMENTS = (
    b"From: a@example.test\r\nTo: me@example.test\r\nSubject: files\r\nMessage-ID: <files-1@example.test>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\n"
    b"Content-Type: text/plain\r\n\r\nTwo files attached.\r\n--XX\r\nContent-Type: image/gif; name=\"dot.gif\"\r\n"
    b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"dot.gif\"\r\n\r\n"
    b"R0lGODlhAQABAAAAACw=\r\n--XX\r\nContent-Type: text/html\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.html\r\n\r\n"
    b"<script>alert(1)</script>\r\n--XX--\r\n"
)


@pytest.mark.parametrize("name", sorted(BUILT))
def test_text_parts_with_names_and_broken_multiparts_keep_their_text(name):
    raw, texts, defect = BUILT[name]
    parts = body_parts(raw)
    for text in texts:
        assert text in parts["body_text"]
    parsed = parse(raw)
    assert parsed.snippet
    if defect:
        assert defect in parsed.parse_error and parsed.parse_error.startswith("malformed")
        assert defect in parts["malformed"]
    else:
        assert parsed.parse_error == "" and parts["malformed"] == ""


@pytest.mark.skipif(CORPUS is None, reason="this Python ships no test.test_email corpus; BUILT covers the shapes")
@pytest.mark.parametrize(("name", "text", "malformed"), [
    ("msg_04", "a simple kind of mirror", False), ("msg_44", "a simple kind of mirror", False),
    ("msg_17", "This is the dingus fish.", True), ("msg_25", "The original message was received", True),
    ("msg_31", "message 1", True), ("msg_41", "Blah blah blah", True),
])
def test_the_cpython_corpus_messages_that_lost_text_show_it(name, text, malformed):
    raw = (CORPUS / f"{name}.txt").read_bytes()
    parts = body_parts(raw)
    assert text.lower() in parts["body_text"].lower()
    assert bool(parse(raw).parse_error.startswith("malformed")) is malformed


@pytest.mark.skipif(CORPUS is None, reason="this Python ships no test.test_email corpus")
def test_every_corpus_message_parses_without_raising():
    for path in sorted(CORPUS.glob("msg_*.txt")):
        raw = path.read_bytes()
        assert parse(raw) is not None
        assert set(body_parts(raw)) >= {"body_text", "attachments", "malformed"}


def test_attachments_are_listed_with_name_type_and_size():
    parts = body_parts(WITH_ATTACHMENTS)
    assert parts["body_text"].strip() == "Two files attached."
    assert parts["attachments"] == [
        {"n": 1, "name": "dot.gif", "content_type": "image/gif", "size": 14},
        {"n": 2, "name": "résumé.html", "content_type": "text/html", "size": len("<script>alert(1)</script>")},
    ]
    info, data = attachment(WITH_ATTACHMENTS, 1)
    assert data.startswith(b"GIF89a") and info["name"] == "dot.gif"
    assert attachment(WITH_ATTACHMENTS, 3) is None


def test_utf8_addresses_never_raise_and_display_as_written():
    parsed = parse(UTF8_ADDRESSES)
    assert parsed.parse_error == ""
    assert parsed.from_addr == "Jöran Müller <jöran@bücher.example>"
    assert parsed.to_addrs == ['"李, 小龙" <李@例え.jp>', "plain@example.test"]
    assert parsed.cc_addrs == ["Renée <renee@example.test>"]
    assert parsed.subject == "Grüße aus Köln"
    assert parsed.message_id == "<intl-1@bücher.example>"
    # Not UTF-8 either: still no exception, the address listed with replacement characters.
    latin1 = b"From: J\xf6ran <j\xf6ran@example.test>\r\nTo: x@\xff\r\n\r\nbody\r\n"
    assert "ran@example.test" in parse(latin1).from_addr


def test_a_nul_in_a_header_is_dropped_before_the_database():
    parsed = parse(b"From: a\x00b@example.test\r\nSubject: nul\x00here\r\n\r\nx\r\n")
    assert "\x00" not in parsed.subject + parsed.from_addr and parsed.subject == "nulhere"


# --- through Dovecot, the sync, the API and the pages ----------------------------------------------

pytestmark_db = pytest.mark.django_db(databases=["default", "vault"])


@pytestmark_db
def test_one_utf8_message_among_500_through_dovecot_lists_all_501(connected, dovecot):  # noqa: F811
    client, connection, imap_user = connected
    messages = sample_messages(500, malformed=False)
    messages.insert(250, UTF8_ADDRESSES)
    dovecot.seed(imap_user, messages)
    assert _sync(client, connection)["status"] == "synced"
    listed, url = [], "/api/v1/messages?limit=200"
    while url:
        page = client.get(url).json()
        listed += page["results"]
        url = page["next"]
    assert len(listed) == 501
    intl = next(m for m in listed if m["subject"] == "Grüße aus Köln")
    assert intl["from"] == "Jöran Müller <jöran@bücher.example>"
    assert intl["to"] == ['"李, 小龙" <李@例え.jp>', "plain@example.test"]
    client.force_login(client.user)
    page = client.get(f"/mail/{intl['id']}/")
    assert "Jöran Müller &lt;jöran@bücher.example&gt;" in page.content.decode()


@pytestmark_db
def test_a_message_that_fails_to_parse_is_listed_with_why_and_the_batch_goes_on(connected, dovecot,  # noqa: F811
                                                                                 monkeypatch):
    from mail.sync import imap as sync_imap

    client, connection, imap_user = connected
    dovecot.seed(imap_user, sample_messages(20, malformed=False) + [UTF8_ADDRESSES])
    real = sync_imap.parse

    def failing(raw):  # a parser bug on exactly one message
        if b"intl-1" in raw:
            raise UnicodeEncodeError("ascii", "ö", 0, 1, "simulated parser defect")
        return real(raw)

    monkeypatch.setattr(sync_imap, "parse", failing)
    assert _sync(client, connection)["status"] == "synced"
    with owner_scope(client.user):
        rows = list(Message.objects.for_owner(client.user).all())
    assert len(rows) == 21
    broken = [row for row in rows if row.parse_error]
    assert [row.parse_error for row in broken] == ["could not be read: UnicodeEncodeError"]
    assert client.get(f"/api/v1/messages/{broken[0].pk}").status_code == 200


@pytestmark_db
@pytest.mark.claim("owner-scoping")
def test_attachments_in_page_and_api_download_for_the_owner_only(connected, dovecot, stranger):  # noqa: F811
    from rest_framework.test import APIClient

    from tests.conftest import issue_tokens

    client, connection, imap_user = connected
    dovecot.seed(imap_user, [WITH_ATTACHMENTS, BUILT["start_boundary_not_found"][0]], seen_every=0)
    _sync(client, connection)
    with owner_scope(client.user):
        files = Message.objects.for_owner(client.user).get(message_id="<files-1@example.test>")
        (broken,) = [m for m in Message.objects.for_owner(client.user) if m.subject == "dingus"]
    detail = client.get(f"/api/v1/messages/{files.pk}").json()
    assert [(a["name"], a["content_type"], a["size"]) for a in detail["attachments"]] == [
        ("dot.gif", "image/gif", 14), ("résumé.html", "text/html", 25)]
    download = client.get(f"/api/v1/messages/{files.pk}/attachments/1")
    assert download.status_code == 200 and download.content.startswith(b"GIF89a")
    assert download["Content-Disposition"].startswith("attachment")
    html_file = client.get(f"/api/v1/messages/{files.pk}/attachments/2")
    # Never rendered in our origin: a download, an inert type, a sandbox.
    assert html_file["Content-Type"] == "application/octet-stream" and "sandbox" in html_file["Content-Security-Policy"]
    assert html_file["X-Content-Type-Options"] == "nosniff"
    assert client.get(f"/api/v1/messages/{files.pk}/attachments/3").status_code == 404
    # The page lists them and downloads through the owner-checked view.
    client.force_login(client.user)
    page = client.get(f"/mail/{files.pk}/").content.decode()
    assert f"/mail/{files.pk}/attachments/1/" in page and "dot.gif" in page and "résumé.html" in page
    assert client.get(f"/mail/{files.pk}/attachments/1/").content.startswith(b"GIF89a")
    # A broken multipart: its text and the note, in the API and the page.
    broken_detail = client.get(f"/api/v1/messages/{broken.pk}").json()
    assert "dingus fish" in broken_detail["body_text"] and "StartBoundaryNotFound" in broken_detail["parse_error"]
    assert "This message is malformed" in client.get(f"/mail/{broken.pk}/").content.decode()
    # Another owner: 404 exactly like a missing message, in the API and on the page.
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(other, stranger)["access"])
    assert_cross_owner_404(other, "/api/v1/messages/{id}/attachments/1", files.pk,
                           snapshot=lambda: client.get(f"/api/v1/messages/{files.pk}/attachments/1").content)
    other.force_login(stranger)
    assert other.get(f"/mail/{files.pk}/attachments/1/").status_code == 404


@pytestmark_db
@pytest.mark.skipif(CORPUS is None, reason="this Python ships no test.test_email corpus; BUILT covers the shapes")
def test_the_whole_cpython_corpus_through_dovecot_is_listed_and_shows_its_text(connected, dovecot):  # noqa: F811
    client, connection, imap_user = connected
    paths = sorted(CORPUS.glob("msg_*.txt"))
    dovecot.seed(imap_user, [path.read_bytes() for path in paths], seen_every=0)
    assert _sync(client, connection)["status"] == "synced"
    listed = client.get("/api/v1/messages?limit=200").json()["results"]
    assert len(listed) == len(paths)
    texts = {item["id"]: client.get(f"/api/v1/messages/{item['id']}").json() for item in listed}
    # msg_04 and msg_44: text/plain parts with a file name (inline, or only a name) are the text.
    assert sum("a simple kind of mirror" in d["body_text"] for d in texts.values()) >= 2
    dingus = [d for d in texts.values() if "This is the dingus fish." in d["body_text"]]
    assert any("StartBoundaryNotFound" in d["parse_error"] for d in dingus)
    assert any("Blah blah blah" in d["body_text"] and "NoBoundaryInMultipart" in d["parse_error"]
               for d in texts.values())
    assert any(a["name"] == "dingusfish.gif" and a["content_type"] == "image/gif"
               for d in texts.values() for a in d["attachments"])


@pytestmark_db
def test_a_row_postgresql_refuses_is_listed_with_why_and_the_batch_goes_on(connected, dovecot,  # noqa: F811
                                                                            monkeypatch):
    from mail.sync import imap as sync_imap

    client, connection, imap_user = connected
    dovecot.seed(imap_user, sample_messages(30, malformed=False) + [UTF8_ADDRESSES])
    real = sync_imap._row

    def with_nul(*args):  # PostgreSQL refuses NUL in text: the whole bulk insert fails
        row = real(*args)
        if row.subject == "Grüße aus Köln":  # (the subject is sealed now: a plain text column refuses)
            row.message_id = "<gruesse\x00@example.test>"
        return row

    monkeypatch.setattr(sync_imap, "_row", with_nul)
    assert _sync(client, connection)["status"] == "synced"
    with owner_scope(client.user):
        rows = list(Message.objects.for_owner(client.user).all())
    assert len(rows) == 31
    assert [row.parse_error for row in rows if row.parse_error] == ["could not be read: DataError"]
