"""The mail client people live in: three panes, keyset paging, filters, thread counts, the dashboard
and the settings hub — always only the signed-in user's data."""

import datetime
import re
import uuid

import pytest
from django.test import Client
from django.utils import timezone

from aiemaily.ownership.binding import owner_scope
from mail.assistant.models import AiResult
from mail.models import Connection, Folder, Message
from tests.harness.factories import UserFactory, audit_event

pytestmark = pytest.mark.django_db(databases=["default", "vault"])

BASE = datetime.datetime(2026, 11, 1, 12, 0, tzinfo=datetime.UTC)


def _mailbox(user, *, email="me@example.test"):
    with owner_scope(user):
        connection = Connection.objects.create(owner=user, provider="imap", email=email, status="active")
        inbox = Folder.objects.create(owner=user, connection=connection, name="INBOX", role="inbox",
                                      synced_at=timezone.now())
        archive = Folder.objects.create(owner=user, connection=connection, name="Archive", role="archive")
    return connection, inbox, archive


def _messages(user, connection, folder, count, **fields):
    with owner_scope(user):
        return [Message.objects.create(owner=user, connection=connection, folder=folder,
                                       subject=fields.get("subject", f"Message {i:03d}"),
                                       from_addr=fields.get("from_addr", f"sender{i}@example.test"),
                                       date=fields.get("date", BASE - datetime.timedelta(minutes=i // 3)),
                                       thread_id=fields.get("thread_id", ""), labels=fields.get("labels", []),
                                       unread=fields.get("unread", i % 2 == 0), uidvalidity=1,
                                       uid=Message.objects.for_owner(user).count() + 1)
                for i in range(count)]


def _client(user):
    client = Client()
    client.force_login(user)
    return client


def _listed_ids(page: str) -> list[str]:
    return re.findall(r'data-message-id="([0-9a-f-]{36})"', page)


def _next_link(page: str) -> str | None:
    found = re.search(r'href="\?([^"]*)" rel="next"', page)
    return found.group(1).replace("&amp;", "&") if found else None


def test_keyset_paging_walks_every_message_once_newest_first_with_ties_and_undated():
    user = UserFactory()
    connection, inbox, _ = _mailbox(user)
    dated = _messages(user, connection, inbox, 120)  # three messages share each minute
    undated = _messages(user, connection, inbox, 3, date=None)
    client = _client(user)
    seen, query = [], ""
    for _ in range(10):
        page = client.get(f"/mail/?{query}").content.decode()
        seen += _listed_ids(page)
        query = _next_link(page)
        if query is None:
            break
    expected = sorted(dated, key=lambda m: (m.date, m.pk), reverse=True) + sorted(undated, key=lambda m: m.pk,
                                                                                   reverse=True)
    assert seen == [str(m.pk) for m in expected]


def test_a_forged_cursor_shows_the_first_page_not_an_error():
    user = UserFactory()
    connection, inbox, _ = _mailbox(user)
    _messages(user, connection, inbox, 3)
    client = _client(user)
    first = _listed_ids(client.get("/mail/").content.decode())
    for cursor in ("nonsense", "2026-13-01_x", f"2026-11-01T00:00:00_{uuid.uuid4()}x", "_", "-_zzz"):
        response = client.get("/mail/", {"before": cursor})
        assert response.status_code == 200
        assert _listed_ids(response.content.decode()) == first


def test_filters_folders_labels_unread_and_triage_views():
    user = UserFactory()
    connection, inbox, archive = _mailbox(user)
    in_inbox = _messages(user, connection, inbox, 2, subject="Inbox mail", unread=False)
    in_archive = _messages(user, connection, archive, 1, subject="Archived mail", labels=["Work"], unread=True)
    with owner_scope(user):
        AiResult.objects.create(owner=user, message=in_inbox[0], kind="triage", status="ready",
                                category="needs_reply", priority="high")
    client = _client(user)
    folder_page = client.get("/mail/", {"connection": connection.pk, "folder": "Archive"}).content.decode()
    assert _listed_ids(folder_page) == [str(in_archive[0].pk)]
    assert _listed_ids(client.get("/mail/", {"label": "Work"}).content.decode()) == [str(in_archive[0].pk)]
    assert _listed_ids(client.get("/mail/", {"unread": "1"}).content.decode()) == [str(in_archive[0].pk)]
    assert _listed_ids(client.get("/mail/", {"category": "needs_reply"}).content.decode()) == [str(in_inbox[0].pk)]
    # Malformed filters are ignored, never a 500.
    for bad in ({"connection": "not-a-uuid"}, {"label": "bad label!"}, {"category": "bogus"}):
        assert client.get("/mail/", bad).status_code == 200
    # The sidebar lists the mailbox's folders with links that keep to that mailbox.
    assert f"?connection={connection.pk}&amp;folder=Archive" in folder_page


def test_the_reading_pane_shows_the_selected_message_and_never_another_users():
    alice, bob = UserFactory(), UserFactory()
    a_conn, a_inbox, _ = _mailbox(alice)
    b_conn, b_inbox, _ = _mailbox(bob, email="bob@example.test")
    mine = _messages(alice, a_conn, a_inbox, 1, subject="Alice's plans")[0]
    theirs = _messages(bob, b_conn, b_inbox, 1, subject="Bob's secret plans")[0]
    client = _client(alice)
    page = client.get("/mail/", {"m": mine.pk}).content.decode()
    assert 'class="mailbox has-selection"' in page and "<h1>Alice&#x27;s plans</h1>" in page
    assert f'action="/mail/{mine.pk}/archive/"' in page
    for foreign in (theirs.pk, uuid.uuid4(), "not-a-uuid"):
        response = client.get("/mail/", {"m": foreign})
        assert response.status_code == 200
        body = response.content.decode()
        assert "has-selection" not in body and "Bob" not in body and str(theirs.pk) not in body


def test_threads_are_counted_in_the_list():
    user = UserFactory()
    connection, inbox, _ = _mailbox(user)
    _messages(user, connection, inbox, 3, thread_id="thread-1", subject="Trip")
    page = Client()
    page.force_login(user)
    body = page.get("/mail/").content.decode()
    assert body.count('title="messages in this thread">3</span>') == 3


def test_the_dashboard_shows_mailboxes_triage_summaries_and_security_events_of_this_user_only():
    alice, bob = UserFactory(), UserFactory()
    a_conn, a_inbox, _ = _mailbox(alice, email="alice-box@example.test")
    b_conn, b_inbox, _ = _mailbox(bob, email="bob-box@example.test")
    ask = _messages(alice, a_conn, a_inbox, 1, subject="Can you confirm Tuesday?")[0]
    summarised = _messages(alice, a_conn, a_inbox, 1, subject="Quarterly report")[0]
    bob_ask = _messages(bob, b_conn, b_inbox, 1, subject="Bob needs an answer")[0]
    with owner_scope(alice):
        AiResult.objects.create(owner=alice, message=ask, kind="triage", status="ready", category="needs_reply")
        AiResult.objects.create(owner=alice, message=summarised, kind="summary", status="ready", source="offline",
                                provider="offline")
    with owner_scope(bob):
        AiResult.objects.create(owner=bob, message=bob_ask, kind="triage", status="ready", category="needs_reply")
    audit_event(alice, action="lease", purpose="imap_password")
    audit_event(bob, action="decrypt", purpose="bob-only-purpose")
    page = _client(alice).get("/dashboard/").content.decode()
    assert "alice-box@example.test" in page and "Synced" in page
    assert "Can you confirm Tuesday?" in page and "Quarterly report" in page
    assert "Credential leased to a worker" in page and "imap_password" in page
    assert "bob" not in page.lower().replace("bob-box", "")  # nothing of Bob's, by any field
    assert "Connect a mailbox</a>: Gmail" not in page  # alice has one


def test_a_new_user_is_shown_the_next_steps():
    page = _client(UserFactory()).get("/dashboard/").content.decode()
    assert "Next steps" in page and "Connect a mailbox" in page and "add your own AI key" in page


def test_settings_links_every_section_that_exists():
    page = _client(UserFactory()).get("/settings/").content.decode()
    for href in ("/accounts/password/", "/mail/assistant/", "/billing/", "/settings/audit/", "/connections/",
                 "/accounts/delete/"):
        assert f'href="{href}"' in page, href
    assert 'href=""' not in page  # a section whose page does not exist is left out, not linked to nowhere


def test_pages_need_sign_in():
    client = Client()
    for url in ("/mail/", "/dashboard/", "/settings/"):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_new_mail_is_counted_above_the_newest_shown_under_the_same_filters_and_owner():
    alice, bob = UserFactory(), UserFactory()
    connection, inbox, archive = _mailbox(alice)
    b_conn, b_inbox, _ = _mailbox(bob, email="bob@example.test")
    shown = _messages(alice, connection, inbox, 2)
    client = _client(alice)
    page = client.get("/mail/").content.decode()
    after = re.search(r"after=([^\"&]+)", page).group(1)
    url = f"/mail/updates.json?after={after}"
    assert client.get(url).json() == {"new": 0}
    later = BASE + datetime.timedelta(minutes=5)
    _messages(alice, connection, inbox, 2, date=later)
    _messages(alice, connection, archive, 1, date=later)
    _messages(bob, b_conn, b_inbox, 4, date=later)  # never counted for alice
    assert client.get(url).json() == {"new": 3}
    assert client.get(url + f"&connection={connection.pk}&folder=INBOX").json() == {"new": 2}
    assert client.get("/mail/updates.json?after=garbage").json() == {"new": 0}
    assert shown  # the page showed something to be newer than
    assert Client().get(url).status_code == 302  # signed out: to the sign-in page
