"""The sync's batch insert (aiemaily/bulk_insert.py): one unnest() statement per batch that skips
rows already there and says which rows were new; the message-list snippet read from a prefix
of the body gives exactly what the whole body gives."""

import random
import re
import uuid

import pytest
from django.db import ProgrammingError, connection

from aiemaily import bulk_insert
from aiemaily.ownership.binding import owner_scope
from mail import metadata, parsing
from mail.models import Connection, Folder, Message
from mail.search_index import MessageTerms, rows_write, search_filter
from tests.harness.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def folder(user):
    with owner_scope(user):
        conn = Connection.objects.create(owner=user, provider="imap", email="me@example.test", status="active")
        return Folder.objects.create(owner=user, connection=conn, name="INBOX", role="inbox")


def _message(folder, uid, subject):
    message = Message(owner_id=folder.owner_id, connection_id=folder.connection_id, folder=folder, uidvalidity=7,
                      uid=uid, message_id=f"<{uid}@example.test>", flags=["\\Seen", "$Label"],
                      unread=False, size=100 + uid)
    message.subject = subject
    message.from_addr = f"Sender {uid} <s{uid}@example.test>"
    message.to_addrs = ["me@example.test", "you@example.test"]
    message.cc_addrs = []
    message.snippet = f"snippet {uid}"
    return message


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_batch_goes_in_once_and_says_which_rows_were_new(user, folder):
    with owner_scope(user):
        first = [_message(folder, uid, f"Quarterly report {uid}") for uid in (1, 2, 3)]
        created = Message.objects.bulk_create(first, ignore_conflicts=True)
        assert [m.pk for m in created] == [m.pk for m in first]
        # A re-fetched copy of uid 2 (a new row object, the same folder/uidvalidity/uid) and one new row.
        again = [_message(folder, 2, "Quarterly report 2"), _message(folder, 4, "Budget 4")]
        for row in again:
            metadata.seal_pending(row)
        inserted = bulk_insert.insert_new(Message, again)
        assert inserted == {again[1].pk}
        rows = {m.uid: m for m in Message.objects.for_owner(user)}
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[2].pk == first[1].pk  # the first copy stayed
    assert rows[4].subject == "Budget 4" and rows[4].to_addrs == ["me@example.test", "you@example.test"]
    assert rows[4].flags == ["\\Seen", "$Label"] and rows[4].size == 104 and rows[4].unread is False
    assert rows[3].from_addr == "Sender 3 <s3@example.test>"


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_index_rows_travel_as_array_literals_and_are_found(user, folder):
    with owner_scope(user):
        rows = [_message(folder, uid, subject) for uid, subject in ((1, "Invoice March"), (2, "Holiday plans"))]
        Message.objects.bulk_create(rows, ignore_conflicts=True)
        stored = {t.message_id: t.terms for t in MessageTerms.objects.for_owner(user)}
        assert set(stored) == {rows[0].pk, rows[1].pk}
        assert all(isinstance(terms, list) and len(terms) > 2 for terms in stored.values())
        found = search_filter(Message.objects.for_owner(user), user, "invoice")
        assert [m.pk for m in found] == [rows[0].pk]
        assert rows_write(rows, replace=False) == 2  # written again: skipped, not doubled, not failed
        assert MessageTerms.objects.for_owner(user).count() == 2


@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.claim("owner-scoping")
def test_the_batch_insert_cannot_write_another_owners_rows(user, folder):
    """The unnest() statement bypasses the ORM's insert, not the database's row-level security: bound
    to one owner, rows (messages or index rows) owned by another are refused, and nothing goes in."""
    stranger = UserFactory()
    with owner_scope(stranger):
        theirs = _message(folder, 9, "Not yours")
        theirs.owner_id = stranger.pk
        metadata.seal_pending(theirs)  # sealed under their own key, as a sync of theirs would
    for model, rows in ((Message, [theirs]),
                        (MessageTerms, [MessageTerms(message_id=uuid.uuid4(), owner_id=stranger.pk, terms=[1])])):
        with pytest.raises(ProgrammingError, match="row-level security"), owner_scope(user):
            bulk_insert.insert_new(model, rows)
    with owner_scope(stranger):
        assert not Message.objects.for_owner(stranger).exists()
        assert not MessageTerms.objects.for_owner(stranger).exists()


def test_a_column_of_arrays_must_come_as_literal_text(user, folder):
    if connection.vendor != "postgresql":
        assert bulk_insert.insert_new(MessageTerms, []) is None  # elsewhere the caller uses bulk_create
        return
    bad = MessageTerms(message_id=uuid.uuid4(), owner_id=user.pk, terms=[1, 2])
    MessageTerms._meta.get_field("terms").get_db_prep_value = lambda value, connection=None, prepared=False: value
    try:
        with pytest.raises(ValueError, match="literal text"):
            bulk_insert.insert_new(MessageTerms, [bad])
    finally:
        del MessageTerms._meta.get_field("terms").get_db_prep_value


_SPACE = re.compile(r"\s+")


def _snippet_of_whole_text(text: str, html: bool) -> str:
    if html:
        text = re.sub(r"<[^>]+>", " ", text)
    return _SPACE.sub(" ", text).strip()[:200]


# (alphabet, most pieces in a text): every text spans up to ~100 KB, past several of _snippet's
# prefix sizes (1, 4, 16, 64 KiB), so the cuts fall inside runs of space and inside tags.
@pytest.mark.parametrize(("alphabet", "pieces"), [
    (["a", "b", " ", "\n", "\t", "<p>", "<div class='x y'>", "</p>", "<", ">", "word "], 6000),
    (["a", " ", "<", ">", "<<", ">>"], 6000),
    (["a" * 50, " " * 300, "<" + "x" * 2000 + ">", "\r\n"], 160),
])
def test_the_snippet_from_a_prefix_is_the_snippet_of_the_whole_body(alphabet, pieces):
    generator = random.Random(alphabet[0])
    for _ in range(3000):
        text = "".join(generator.choice(alphabet) for _ in range(generator.randint(0, pieces)))
        for html in (False, True):
            assert parsing._snippet(text, html=html) == _snippet_of_whole_text(text, html)
    leading_space = " " * 9000 + "hello " * 100
    assert parsing._snippet(leading_space) == _snippet_of_whole_text(leading_space, False)
