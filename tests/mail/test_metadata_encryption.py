"""Message metadata at rest (issue 17): subject, addresses and snippet are ciphertext under the owner's
keys, bound to their row, owner and field; search goes through a keyed blind index and finds what a
plaintext search over the same mail finds; a backup holds no readable metadata, before or after the
account is deleted."""

import datetime
import hmac
import random
import unicodedata
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection as db_connection
from django.test import Client
from rest_framework.test import APIClient

from aiemaily.ownership.binding import owner_scope
from mail import blobstore, metadata, metadata_keys, metadata_migration, search_index
from mail.models import Connection, Folder, Message, MessageTerms, MetadataKey, OutboxMessage
from mail.tasks import outbox_send
from secrets_vault.crypto import canonical_aad, parse_header
from secrets_vault.tasks import leases_issue
from tests.conftest import issue_tokens
from tests.harness.factories import UserFactory, staff_admin_client
from tests.mail.test_delegation import shared  # noqa: F401 - fixture: a thread shared with a delegate
from tests.mail.test_sync_imap import _sync, connected, objects_dir  # noqa: F401 - fixtures: a synced Dovecot box
from tests.vault.test_crypto_shredding import _delete_account, _pg_dump

pytestmark = pytest.mark.claim("data-at-rest")

BASE = datetime.datetime(2026, 11, 1, 12, 0, tzinfo=datetime.UTC)


def _box(user):
    with owner_scope(user):
        connection = Connection.objects.create(owner=user, provider="imap", email="me@example.test", status="active")
        folder = Folder.objects.create(owner=user, connection=connection, name="INBOX", role="inbox")
    return connection, folder


def _store(user, connection, folder, items):
    """Rows as the sync writes them (bulk_create), each item (subject, from, snippet)."""
    with owner_scope(user):
        start = Message.objects.for_owner(user).count()
        rows = [Message(owner=user, connection=connection, folder=folder, uidvalidity=1, uid=start + n + 1,
                        subject=subject, from_addr=sender, to_addrs=["me@example.test"], cc_addrs=["cc@example.test"],
                        snippet=snippet, date=BASE - datetime.timedelta(minutes=n),
                        blob_key=blobstore.put(user.pk, ("messages", str(connection.pk), f"m{start + n}"),
                                               b"Subject: (body)\r\n\r\nbody text\r\n"))
                for n, (subject, sender, snippet) in enumerate(items)]
        Message.objects.bulk_create(rows, ignore_conflicts=True)
    return rows


def _api(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(client, user)["access"])
    return client


def _search_ids(client, query) -> set[str]:
    ids, url = set(), "/api/v1/messages"
    params = {"q": query}
    while url:
        response = client.get(url, params)
        assert response.status_code == 200, response.content
        ids |= {item["id"] for item in response.json()["results"]}
        url, params = response.json()["next"], None
    return ids


# --- a synced mailbox leaves no metadata in a backup of the main database --------------------------

SEEDED = [
    ("Zanzibar acquisition memo", "Quentin Marlowe <quentin.marlowe@northwind-secret.test>",
     "The Kilimanjaro shipment arrives on Tuesday"),
    ("Ouagadougou budget review", "Philippa Ostrander <philippa@ostrander-holdings.test>",
     "Please bring the Ljubljana spreadsheets"),
    ("Reykjavik offsite plans", "Quentin Marlowe <quentin.marlowe@northwind-secret.test>",
     "Thessaloniki hotel confirmation attached"),
]
LEAK_CANARIES = ["zanzibar", "acquisition", "ouagadougou", "reykjavik", "quentin", "marlowe", "northwind-secret",
                 "philippa", "ostrander", "kilimanjaro", "ljubljana", "thessaloniki"]


OUTBOX_TO = "wilhelmina.vanderbilt@canary-recipient.test"
OUTBOX_CC = "bartholomew@cc-canary.test"
OUTBOX_SUBJECT = "Transylvania takeover terms"
OUTBOX_CANARIES = ["wilhelmina", "vanderbilt", "canary-recipient", "bartholomew", "cc-canary", "transylvania"]


def _raw(n, subject, sender, text):
    return (f"From: {sender}\r\nTo: Me <me@mail.test>\r\nCc: Team <team@mail.test>\r\nSubject: {subject}\r\n"
            f"Date: Mon, 2 Nov 2026 10:0{n}:00 +0000\r\nMessage-ID: <seed{n}@mail.test>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n").encode()


@pytest.mark.django_db(transaction=True, databases=["default", "vault", "keys"])
def test_a_dump_of_the_main_database_after_a_sync_holds_no_subject_address_or_snippet(connected,  # noqa: F811
                                                                                      dovecot, smtp_server):
    client, connection, user = connected
    dovecot.seed(user, [_raw(n, *item) for n, item in enumerate(SEEDED)])
    assert _sync(client, connection)["status"] == "synced"
    # And mail being sent: its recipients, subject and In-Reply-To are sealed too, and it still goes.
    outbox = client.post("/api/v1/outbox", {
        "connection": str(connection.pk), "to": [OUTBOX_TO], "cc": [OUTBOX_CC], "subject": OUTBOX_SUBJECT,
        "body_text": "See attached.", "in_reply_to": "<seed0@mail.test>"}, format="json").json()
    owner = client.user
    leases = leases_issue(str(owner.pk), str(connection.pk), {"smtp_password": str(connection.smtp_secret_id),
                                                               "imap_password": str(connection.imap_secret_id)})
    assert outbox_send(leases, owner_id=str(owner.pk), outbox_id=outbox["id"])["status"] == "sent"
    delivered = [m for m in smtp_server.messages if outbox["message_id"].encode() in m.original_content]
    assert len(delivered) == 1 and sorted(delivered[0].rcpt_tos) == sorted([OUTBOX_TO, OUTBOX_CC])

    dump = _pg_dump("default").casefold()
    assert "mail_message" in dump and "mail_messageterms" in dump and "mail_outboxmessage" in dump  # the tables...
    leaked = [word for word in LEAK_CANARIES + OUTBOX_CANARIES if word in dump]
    assert leaked == []  # ...and none of the words
    shown = client.get(f"/api/v1/outbox/{outbox['id']}").json()
    assert (shown["to"], shown["cc"], shown["subject"], shown["status"]) == ([OUTBOX_TO], [OUTBOX_CC], OUTBOX_SUBJECT,
                                                                             "sent")

    # The owner still reads and searches everything, decrypted.
    listing = client.get("/api/v1/messages").json()["results"]
    assert sorted(m["subject"] for m in listing) == sorted(s for s, _, _ in SEEDED)
    first = next(m for m in listing if m["subject"] == SEEDED[0][0])
    assert first["from"] == SEEDED[0][1] and first["to"] == ["Me <me@mail.test>"]
    assert "Kilimanjaro" in first["snippet"]
    assert len(_search_ids(client, "zanzibar")) == 1
    assert len(_search_ids(client, "quentin.marlowe@northwind-secret.test")) == 2
    assert len(_search_ids(client, "REYK")) == 1
    assert _search_ids(client, "kilimanjaro") == set()  # snippets are not searchable (nor were they)


# --- search through the index equals a plaintext search ---------------------------------------------

VOCABULARY = ["invoice", "quarterly", "Münster", "offsite", "kickoff", "Ångström", "budgetary", "zebra",
              "hi", "ok", "internationalisation", "deployment", "résumé", "Werkstatt", "yellow", "pumpkin"]
SENDERS = ["Ana Lima <ana.lima@example.test>", "bob@contoso.test", "Chloé Dupré <chloe@paris.test>",
           "\"Dmitri K\" <dk@example.test>", "eve@sub.example.test"]


def _fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()


def _corpus(seed=7, count=80):
    rng = random.Random(seed)
    return [(" ".join(rng.sample(VOCABULARY, rng.randint(1, 4))).capitalize(), rng.choice(SENDERS),
             f"snippet {n}") for n in range(count)]


def _reference(rows, query) -> set[str]:
    """A plaintext search over the same corpus: every query word begins a word of the subject or
    sender (whole word below 3 or above 10 characters); a query with '@' is a whole address."""
    import re

    hits = set()
    for row in rows:
        words = re.findall(r"[^\W_]+", _fold(f"{row.subject} {row.from_addr}"))
        ok = True
        for token in _fold(query).split():
            if "@" in token:
                ok &= token in re.findall(r"[\w.+-]+@[\w.-]+", _fold(row.from_addr))
                continue
            for word in re.findall(r"[^\W_]+", token):
                ok &= any(w.startswith(word) if 3 <= len(word) <= 10 else w == word for w in words)
        if ok:
            hits.add(str(row.pk))
    return hits


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_word_sender_and_prefix_searches_equal_a_plaintext_search(objects_dir):  # noqa: F811
    user = UserFactory()
    connection, folder = _box(user)
    rows = _store(user, connection, folder, _corpus())
    client = _api(user)
    queries = {w for w in VOCABULARY} | {w.upper() for w in VOCABULARY} | {_fold(w) for w in VOCABULARY}
    queries |= {w[:n] for w in VOCABULARY for n in range(3, 11) if len(w) >= n}  # typeahead prefixes
    queries |= {"ana.lima@example.test", "BOB@contoso.test", "chloe@paris.test", "chloe", "dupre", "contoso",
                "ana lima", "invoice zebra", "Munster offsite", "nomatchword", "dmitri", "eve@sub.example.test"}
    checked = 0
    for query in sorted(queries):
        expected = _reference(rows, query)
        assert _search_ids(client, query) == expected, query
        checked += bool(expected)
    assert checked > 60  # most queries do find something: the comparison is not between empty sets

    # Where the old substring search and word search mean the same (a whole word, a whole address),
    # the results are those of the old `icontains` on subject and sender.
    for query in ["invoice", "Quarterly", "kickoff", "ana.lima@example.test", "bob@contoso.test", "yellow"]:
        old = {str(r.pk) for r in rows if query.casefold() in r.subject.casefold()
               or query.casefold() in r.from_addr.casefold()}
        assert _search_ids(client, query) == old, query


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_the_mailbox_page_searches_through_the_index_and_decrypts_only_its_page(objects_dir):  # noqa: F811
    user = UserFactory(password="correct horse battery staple")
    connection, folder = _box(user)
    _store(user, connection, folder, [("Pumpkin soup recipe", "bob@contoso.test", "tasty")] + [
        (f"Weekly report {n}", "Ana <ana@example.test>", f"number {n}") for n in range(60)])
    web = Client()
    web.force_login(user)
    page = web.get("/mail/", {"q": "pumpk"}).content.decode()
    assert "Pumpkin soup recipe" in page and "Weekly report" not in page

    opened = []
    real = metadata.open_value
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metadata, "open_value", lambda *a, **k: opened.append(a[1]) or real(*a, **k))
        page = web.get("/mail/").content.decode()
    assert "Pumpkin soup recipe" in page
    assert 0 < len(set(opened)) <= 50  # one page of 50 (of 61): the rest stays sealed


# --- keys are per user ------------------------------------------------------------------------------

@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_one_users_index_hashes_never_match_another_users_words(objects_dir):  # noqa: F811
    alice, bob = UserFactory(), UserFactory()
    same = [("Quarterly invoice kickoff", "ana@example.test", "x"),
            ("Offsite budgetary zebra", "bob@contoso.test", "y")]
    for user in (alice, bob):
        connection, folder = _box(user)
        _store(user, connection, folder, same)
    with owner_scope(alice):
        alice_terms = {h for terms in MessageTerms.objects.for_owner(alice).values_list("terms", flat=True)
                       for h in terms}
        alice_key = search_index.index_key(alice.pk)
    with owner_scope(bob):
        bob_terms = {h for terms in MessageTerms.objects.for_owner(bob).values_list("terms", flat=True) for h in terms}
        bob_key = search_index.index_key(bob.pk)
    assert len(alice_terms) > 20 and len(bob_terms) == len(alice_terms)  # the same words...
    assert alice_terms.isdisjoint(bob_terms)  # ...hash to nothing in common
    assert alice_key != bob_key
    assert search_index.term_hash(bob_key, ("p", "invoice")) not in alice_terms
    # And Bob's search never reaches Alice's rows (RLS and the key both say so).
    assert _search_ids(_api(bob), "invoice") and _search_ids(_api(bob), "invoice").isdisjoint(
        {str(m.pk) for m in _all(alice)})


# --- the index's storage: one row per message, 64-bit hashes, collisions re-checked ------------------

@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_a_batch_writes_one_index_row_per_message_holding_its_term_hashes(objects_dir,  # noqa: F811
                                                                          django_assert_max_num_queries):
    user = UserFactory()
    connection, folder = _box(user)
    _store(user, connection, folder, [("warm up", "a@example.test", "")])  # the keys exist
    with owner_scope(user), django_assert_max_num_queries(4):  # messages, existence check, index rows
        rows = [Message(owner=user, connection=connection, folder=folder, uidvalidity=3, uid=n,
                        subject=f"Quarterly invoice {n}", from_addr="Ana Lima <ana.lima@example.test>", date=BASE)
                for n in range(200)]
        Message.objects.bulk_create(rows, ignore_conflicts=True)
    with owner_scope(user):
        stored = dict(MessageTerms.objects.for_owner(user).filter(message__in=rows).values_list("message", "terms"))
        key = search_index.index_key(user.pk)
    assert len(stored) == 200  # one row per message, not one per term
    row = rows[7]
    expected = sorted({search_index.term_hash(key, t) for t in search_index.document_terms(
        subject=row.subject, sender=row.from_addr)})
    assert stored[row.pk] == expected and len(expected) > 20
    assert all(-2**63 <= h < 2**63 for h in expected)  # bigint: the first 64 bits of the HMAC
    assert search_index.term_hash(key, ("p", "invoice")) == int.from_bytes(
        hmac.digest(key, b"p\x00invoice", "sha256")[:8], "big", signed=True)


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_a_64_bit_hash_collision_is_re_checked_after_decryption_and_never_shown(objects_dir):  # noqa: F811
    user = UserFactory(password="correct horse battery staple")
    connection, folder = _box(user)
    real, decoy = _store(user, connection, folder, [("Pumpkin soup recipe", "bob@contoso.test", "tasty"),
                                                    ("Weekly report", "ana@example.test", "numbers")])
    with owner_scope(user):
        key = search_index.index_key(user.pk)
        # As if a term of the decoy collided with "pumpkin": the index now answers it for both rows.
        terms = MessageTerms.objects.for_owner(user).get(message=decoy)
        terms.terms = sorted({*terms.terms, search_index.term_hash(key, ("p", "pumpkin"))})
        terms.save(update_fields=["terms"])
        assert set(search_index.search_filter(Message.objects.for_owner(user), user, "pumpkin")
                   .values_list("pk", flat=True)) == {real.pk, decoy.pk}
    assert _search_ids(_api(user), "pumpkin") == {str(real.pk)}  # the API shows the real match only
    web = Client()
    web.force_login(user)
    page = web.get("/mail/", {"q": "pumpkin"}).content.decode()
    assert "Pumpkin soup recipe" in page and "Weekly report" not in page  # and so does the page


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_reindex_rebuilds_a_lost_index_from_the_sealed_columns(objects_dir):  # noqa: F811
    user = UserFactory()
    connection, folder = _box(user)
    rows = _store(user, connection, folder, [(f"Harbour notice {n}", f"port{n}@example.test", "") for n in range(5)])
    with owner_scope(user):
        MessageTerms.objects.for_owner(user).filter(message__in=rows[:3]).delete()
    client = _api(user)
    assert _search_ids(client, "harbour") == {str(r.pk) for r in rows[3:]}
    out = StringIO()
    call_command("metadata_encrypt", "--owner", str(user.pk), "--reindex", stdout=out)
    assert "5/5 messages reindexed" in out.getvalue()
    assert _search_ids(client, "harbour") == {str(r.pk) for r in rows}
    assert _search_ids(client, "port2@example.test") == {str(rows[2].pk)}


@pytest.mark.django_db(transaction=True, databases=["default", "vault", "keys"])
def test_migration_0011_carries_old_index_rows_over_without_any_key(objects_dir):  # noqa: F811
    """Rows of the one-row-per-term table (mail_searchterm, 128-bit hashes) become each message's
    array of 64-bit hashes: the same searches find the same messages, and no key was needed."""
    from importlib import import_module

    from django.db import connections
    from django.db.utils import load_backend

    from tests.conftest import OWNER_ROLE

    alice, bob = UserFactory(), UserFactory()
    corpus = _corpus(seed=11, count=30)
    stored, old_rows = {}, []
    for user in (alice, bob):
        connection, folder = _box(user)
        stored[user.pk] = _store(user, connection, folder, corpus)
        with owner_scope(user):
            key = search_index.index_key(user.pk)  # the old hashes: 128 bits of the same HMAC
        old_rows += [(str(user.pk), str(row.pk), hmac.digest(key, f"{k}\x00{v}".encode(), "sha256")[:16])
                     for row in stored[user.pk]
                     for k, v in search_index.document_terms(subject=row.subject, sender=row.from_addr)]
    old_rows.append((str(alice.pk), str(uuid.uuid4()), b"\x01" * 16))  # a row whose message is gone

    settings_dict = connections["default"].settings_dict
    owner_connection = load_backend(settings_dict["ENGINE"]).DatabaseWrapper({**settings_dict, "USER": OWNER_ROLE},
                                                                             "default")
    migration = import_module("mail.migrations.0011_message_terms_array")
    try:
        with owner_connection.cursor() as cursor:  # the table as 0010 made it, and the index as it was
            cursor.execute("CREATE TABLE mail_searchterm (id bigserial PRIMARY KEY, owner_id uuid NOT NULL, "
                           "message_id uuid NOT NULL, term bytea NOT NULL)")
            cursor.executemany("INSERT INTO mail_searchterm (owner_id, message_id, term) VALUES (%s, %s, %s)",
                               old_rows)
            cursor.execute("ALTER TABLE mail_searchterm ENABLE ROW LEVEL SECURITY")
            cursor.execute("ALTER TABLE mail_searchterm FORCE ROW LEVEL SECURITY")
            cursor.execute("ALTER TABLE mail_messageterms NO FORCE ROW LEVEL SECURITY")
            cursor.execute("DELETE FROM mail_messageterms")
            cursor.execute("ALTER TABLE mail_messageterms FORCE ROW LEVEL SECURITY")
        assert _search_ids(_api(alice), "invoice") == set()  # no index rows: nothing found
        try:
            with owner_connection.schema_editor() as editor:
                migration.carry_over(None, editor)
        finally:
            with owner_connection.cursor() as cursor:
                cursor.execute("DROP TABLE mail_searchterm")
    finally:
        owner_connection.close()
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT relforcerowsecurity FROM pg_class "
                       "WHERE relname IN ('mail_message', 'mail_messageterms')")
        assert [row[0] for row in cursor.fetchall()] == [True, True]  # RLS is forced again

    for user in (alice, bob):
        with owner_scope(user):
            assert MessageTerms.objects.for_owner(user).count() == 30  # the orphan did not come along
        client = _api(user)
        for query in ("invoice", "quart", "Münster", "chloe@paris.test", "contoso", "hi", "ana lima", "zebra"):
            assert _search_ids(client, query) == _reference(stored[user.pk], query), query
        assert _search_ids(client, "invoice")  # the comparison is not between empty sets


@pytest.mark.sqlite_smoke
@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_word_address_and_prefix_search_on_either_database(objects_dir):  # noqa: F811
    # `make run` uses SQLite, which has no arrays: the index field stores text there, searched with LIKE.
    user, stranger = UserFactory(), UserFactory()
    connection, folder = _box(user)
    rows = _store(user, connection, folder, _corpus(seed=5, count=25))
    other_connection, other_folder = _box(stranger)
    _store(stranger, other_connection, other_folder, _corpus(seed=5, count=25))  # the same words, other keys
    client = _api(user)
    for query in ("invoice", "INVOI", "munster", "Ångström", "hi", "chloe@paris.test", "contoso",
                  "ana lima", "invoice zebra", "nomatchword"):
        assert _search_ids(client, query) == _reference(rows, query), query
    assert _search_ids(client, "ana")  # not an empty comparison


def _all(user):
    with owner_scope(user):
        return list(Message.objects.for_owner(user).order_by("-date"))


# --- a delegate reads the shared thread's metadata through the grant, and nothing more ------------

@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_a_delegate_reads_shared_metadata_with_a_cold_cache_and_never_the_index_key(shared):  # noqa: F811
    owner_client, delegate_client, grant = shared
    blobstore.key_cache.clear()  # another web process: nothing of the owner's is cached
    listed = delegate_client.get("/api/v1/shared/messages").json()["results"]
    assert sorted(m["subject"] for m in listed) == ["Budget", "Re: Budget"]
    assert {m["from"] for m in listed} == {"a@example.test", "b@example.test"}
    owner, delegate = owner_client.user, delegate_client.user
    with owner_scope(delegate):  # RLS: the owner's metadata key for columns, not the index key
        assert MetadataKey._base_manager.filter(owner=owner, purpose="fields").exists()
        assert not MetadataKey._base_manager.filter(owner=owner, purpose="index").exists()
        assert not MessageTerms._base_manager.filter(owner=owner).exists()  # nor a hash of a word it can read
    assert owner_client.delete(f"/api/v1/delegations/{grant['id']}").status_code == 204
    with owner_scope(delegate):
        assert not MetadataKey._base_manager.filter(owner=owner).exists()


# --- a ciphertext moved or changed is detected, never shown -----------------------------------------

@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_a_ciphertext_moved_to_another_row_or_owner_or_changed_is_detected_not_shown(objects_dir, caplog):  # noqa: F811
    alice, mallory = UserFactory(), UserFactory()
    connection, folder = _box(alice)
    secret, other = _store(alice, connection, folder, [("Acquisition of Contoso", "ceo@example.test", "confidential"),
                                                        ("Lunch on Friday", "friend@example.test", "pizza")])
    m_connection, m_folder = _box(mallory)
    (mallory_row,) = _store(mallory, m_connection, m_folder, [("Hello", "m@example.test", "hi")])
    with owner_scope(alice):
        stored = Message.objects.for_owner(alice).get(pk=secret.pk)
        # Another row of the same owner gets the secret row's subject; a third field gets flipped bits.
        Message.objects.for_owner(alice).filter(pk=other.pk).update(
            subject_ct=stored.subject_ct, from_ct=bytes(stored.from_ct[:-1]) + bytes([stored.from_ct[-1] ^ 1]),
            snippet_ct=stored.subject_ct)
    with owner_scope(mallory):  # the database thief's move: into a row they can read
        Message.objects.for_owner(mallory).filter(pk=mallory_row.pk).update(subject_ct=stored.subject_ct)

    alice_view = _api(alice).get(f"/api/v1/messages/{other.pk}")
    assert alice_view.status_code == 200
    data = alice_view.json()
    assert data["subject"] == metadata.UNREADABLE and data["from"] == metadata.UNREADABLE
    assert data["snippet"] == metadata.UNREADABLE  # a subject moved into the snippet field fails too
    listing = _api(alice).get("/api/v1/messages").content.decode()
    assert listing.count("Acquisition of Contoso") == 1  # only on its own row
    mallory_view = _api(mallory).get("/api/v1/messages").json()["results"]
    assert [m["subject"] for m in mallory_view] == [metadata.UNREADABLE]
    assert "Acquisition" not in caplog.text and any(
        getattr(r, "event", "") == "metadata_unreadable" for r in caplog.records)


# --- shredding: a backup and the object store yield no readable metadata ----------------------------

@pytest.mark.django_db(transaction=True, databases=["default", "vault", "keys"])
def test_after_deletion_a_dump_and_the_objects_yield_no_metadata(objects_dir, monkeypatch,  # noqa: F811
                                                                 django_capture_on_commit_callbacks):
    from tests.harness.factories import DEFAULT_PASSWORD  # noqa: F401 - the password _delete_account signs with

    user = UserFactory()
    connection, folder = _box(user)
    rows = _store(user, connection, folder, [("Merger with Fabrikam", "cfo@fabrikam.test", "board meets Friday")])
    with owner_scope(user):
        sealed = Message.objects.for_owner(user).values_list("pk", "subject_ct", "from_ct").get()
        keys = [(k.purpose, k.version, bytes(k.key_ct)) for k in MetadataKey.objects.for_owner(user)]
    assert sorted(purpose for purpose, _, _ in keys) == ["fields", "index"]
    dump = _pg_dump("default")
    assert "Merger" not in dump and "fabrikam" not in dump.casefold()
    assert bytes(sealed[1]).hex() in dump  # the ciphertext is what a backup holds

    assert _delete_account(user, monkeypatch, django_capture_on_commit_callbacks).successful()
    blobstore.key_cache.clear()  # a fresh process restores the backup, the storage KMS still at hand
    for purpose, version, key_ct in keys:  # the metadata keys, restored from the dump, do not open
        with pytest.raises(blobstore.BlobError):
            blobstore.open_field(user.pk, metadata_keys.sealed_name(purpose, version), key_ct)
    with owner_scope(user):
        for name, value in (("subject", sealed[1]), ("from_addr", sealed[2])):
            with pytest.raises(blobstore.BlobError):
                metadata.open_value(user.pk, rows[0].pk, name, bytes(value))
    assert "Merger" not in "".join(p.read_text(errors="ignore") for p in objects_dir.rglob("*") if p.is_file())


# --- migration of plaintext rows, and key rotation ----------------------------------------------------

def _legacy_rows(user, count):
    """Rows as a release before issue 17 left them: plaintext columns, nothing sealed, no index."""
    connection, folder = _box(user)
    rows = _store(user, connection, folder, [(f"Legacy report {n}", f"old{n}@example.test", f"snippet {n}")
                                             for n in range(count)])
    with owner_scope(user):
        for row in rows:
            Message.objects.for_owner(user).filter(pk=row.pk).update(
                subject_ct=None, from_ct=None, to_ct=None, cc_ct=None, snippet_ct=None, legacy_subject=row.subject,
                legacy_from_addr=row.from_addr, legacy_to_addrs=row.to_addrs, legacy_snippet=row.snippet)
        MessageTerms.objects.for_owner(user).delete()
    return rows


def _plaintext_left(user) -> int:
    with db_connection.cursor() as cursor, owner_scope(user):
        cursor.execute("SELECT count(*) FROM mail_message WHERE owner_id = %s AND (subject <> '' OR from_addr <> '' "
                       "OR snippet <> '' OR to_addrs::text <> '[]')", [str(user.pk)])
        return cursor.fetchone()[0]


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_metadata_encrypt_seals_legacy_rows_resumably_with_progress(objects_dir):  # noqa: F811
    user = UserFactory()
    rows = _legacy_rows(user, 7)
    client = _api(user)
    assert _plaintext_left(user) == 7
    assert client.get(f"/api/v1/messages/{rows[0].pk}").json()["subject"] == "Legacy report 0"  # still shown
    assert _search_ids(client, "legacy") == set()  # ...but not indexed yet

    class Interrupted(Exception):
        pass

    def die_after_the_first_batch(done, total):
        raise Interrupted

    with pytest.raises(Interrupted):
        metadata_migration.owner_encrypt(user.pk, batch_size=3, progress=die_after_the_first_batch)
    assert _plaintext_left(user) == 4  # the first batch committed: sealed and indexed together
    assert len(_search_ids(client, "legacy")) == 3

    out = StringIO()
    call_command("metadata_encrypt", "--all", "--batch-size", "3", stdout=out)
    assert f"{user.pk}: 3/4 messages sealed" in out.getvalue() and f"{user.pk}: 4/4 messages sealed" in out.getvalue()
    assert _plaintext_left(user) == 0
    assert {m["subject"] for m in client.get("/api/v1/messages").json()["results"]} == {
        f"Legacy report {n}" for n in range(7)}
    assert _search_ids(client, "old3@example.test") == {str(rows[3].pk)}
    assert len(_search_ids(client, "repo")) == 7

    out = StringIO()
    call_command("metadata_encrypt", "--owner", str(user.pk), "--reindex", stdout=out)  # nothing left to seal
    assert "done: 0 messages sealed" in out.getvalue() and "7/7 messages reindexed" in out.getvalue()
    assert len(_search_ids(client, "legacy")) == 7


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_storage_key_rotation_rewraps_the_metadata_and_the_index_key(objects_dir, settings):  # noqa: F811
    user = UserFactory()
    connection, folder = _box(user)
    (row,) = _store(user, connection, folder, [("Rotation subject", "rot@example.test", "rotating")])
    settings.AIEMAILY_STORAGE_KEY_CACHE_SECONDS = 0
    call_command("storage_keys_rotate", "--owner", str(user.pk), stdout=StringIO())
    blobstore.key_cache.clear()
    with owner_scope(user):
        for key in MetadataKey.objects.for_owner(user):  # re-wrapped under storage key v2 (v1 is gone)
            assert parse_header(bytes(key.key_ct)[2:]).key_version == 2
        stored = Message.objects.for_owner(user).get(pk=row.pk)
        assert stored.subject == "Rotation subject" and stored.cc_addrs == ["cc@example.test"]
    assert _search_ids(_api(user), "rotation") == {str(row.pk)}


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_metadata_key_rotation_reencrypts_every_row_and_retires_the_old_version(objects_dir, settings):  # noqa: F811
    user = UserFactory()
    connection, folder = _box(user)
    rows = _store(user, connection, folder, [(f"Rotating {n}", f"r{n}@example.test", "s") for n in range(5)])
    with owner_scope(user):
        before = {m.pk: bytes(m.subject_ct) for m in Message.objects.for_owner(user)}
    out = StringIO()
    call_command("metadata_encrypt", "--owner", str(user.pk), "--rotate", "--batch-size", "2", stdout=out)
    assert "metadata key v2; 5 re-encrypted, 0 failed; retired none; run again" in out.getvalue()
    settings.AIEMAILY_STORAGE_KEY_CACHE_SECONDS = 0
    out = StringIO()
    call_command("metadata_encrypt", "--owner", str(user.pk), "--rotate", "--resume", stdout=out)
    assert "metadata key v2; 0 re-encrypted, 0 failed; retired [1]" in out.getvalue()
    blobstore.key_cache.clear()
    with owner_scope(user):
        assert list(MetadataKey.objects.for_owner(user).filter(purpose="fields").values_list("version", flat=True)) \
            == [2]
        for stored in Message.objects.for_owner(user):
            assert bytes(stored.subject_ct) != before[stored.pk]
            for column in metadata.SEALED_COLUMNS:
                assert parse_header(bytes(getattr(stored, column))).key_version == 2
        assert sorted(m.subject for m in Message.objects.for_owner(user)) == [f"Rotating {n}" for n in range(5)]
    assert _search_ids(_api(user), "rotating") == {str(r.pk) for r in rows}


# --- the outbox: recipients and subject of mail being sent -------------------------------------------

def _outbox(user, connection, *, to=("friend@example.test",), subject="Quarterly numbers", in_reply_to=""):
    with owner_scope(user):
        row = OutboxMessage(owner=user, connection=connection, message_id=f"<{uuid.uuid4()}@example.test>",
                            to_addrs=list(to), cc_addrs=["boss@example.test"], subject=subject,
                            in_reply_to=in_reply_to, blob_key="")
        row.save()
    return row


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_outbox_rows_are_sealed_bound_to_their_row_and_a_move_or_change_is_detected(objects_dir, caplog):  # noqa: F811
    alice, mallory = UserFactory(), UserFactory()
    connection, folder = _box(alice)
    secret = _outbox(alice, connection, to=["ceo@target.test"], subject="Acquisition offer", in_reply_to="<a@b>")
    other = _outbox(alice, connection, to=["friend@example.test"], subject="Lunch")
    mine = _outbox(mallory, _box(mallory)[0], subject="Hello")
    (message,) = _store(alice, connection, folder, [("A message subject", "x@example.test", "s")])
    with db_connection.cursor() as cursor, owner_scope(alice):
        cursor.execute("SELECT subject, to_addrs::text, cc_addrs::text, in_reply_to FROM mail_outboxmessage "
                       "WHERE id = %s", [str(secret.pk)])
        assert cursor.fetchone() == ("", "[]", "[]", "")  # no plaintext column holds anything
    with owner_scope(alice):
        stored = OutboxMessage.objects.for_owner(alice).get(pk=secret.pk)
        assert (stored.to_addrs, stored.subject, stored.in_reply_to) == (["ceo@target.test"], "Acquisition offer",
                                                                         "<a@b>")
        assert parse_header(bytes(stored.subject_ct)).key_version == 1
        # Another row gets the secret row's subject; its recipients get flipped bits; a message's
        # subject (same owner, same key, other kind of row) is moved into its In-Reply-To.
        sealed_message_subject = Message.objects.for_owner(alice).get(pk=message.pk).subject_ct
        OutboxMessage.objects.for_owner(alice).filter(pk=other.pk).update(
            subject_ct=stored.subject_ct, to_ct=bytes(stored.to_ct[:-1]) + bytes([stored.to_ct[-1] ^ 1]),
            in_reply_to_ct=sealed_message_subject)
    with owner_scope(mallory):
        OutboxMessage.objects.for_owner(mallory).filter(pk=mine.pk).update(subject_ct=stored.subject_ct)

    shown = _api(alice).get(f"/api/v1/outbox/{other.pk}").json()
    assert shown["subject"] == metadata.UNREADABLE and shown["to"] == []
    with owner_scope(alice):
        moved = OutboxMessage.objects.for_owner(alice).get(pk=other.pk)
        assert moved.in_reply_to == metadata.UNREADABLE
        assert metadata.unreadable(moved) == {"subject", "to_addrs", "in_reply_to"}
    assert _api(mallory).get(f"/api/v1/outbox/{mine.pk}").json()["subject"] == metadata.UNREADABLE
    assert _api(alice).get(f"/api/v1/outbox/{secret.pk}").json()["subject"] == "Acquisition offer"
    assert "Acquisition" not in caplog.text and "ceo@target" not in caplog.text


class _NoPasswords:
    """The send's leased passwords, for a send whose SMTP delivery the test plays itself."""

    def has(self, purpose):
        return False

    def open(self, purpose):
        return None


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_an_outbox_row_whose_recipients_fail_authentication_is_never_sent(objects_dir, monkeypatch):  # noqa: F811
    from mail.send import outbox as outbox_module

    user = UserFactory()
    connection, _ = _box(user)
    row = _outbox(user, connection, to=["a@example.test"])
    decoy = _outbox(user, connection, to=["attacker@evil.test"])
    with owner_scope(user):  # the thief's edit: another row's recipients into this one
        OutboxMessage.objects.for_owner(user).filter(pk=row.pk).update(
            to_ct=OutboxMessage.objects.for_owner(user).get(pk=decoy.pk).to_ct)
    delivered = []
    monkeypatch.setattr(outbox_module, "_smtp_deliver", lambda *args: delivered.append(args) or ("accepted", {}))
    assert outbox_module.send(_NoPasswords(), user.pk, row.pk) == "failed"
    assert delivered == []
    with owner_scope(user):
        failed = OutboxMessage.objects.for_owner(user).get(pk=row.pk)
    assert failed.status == "failed" and failed.last_error == outbox_module.UNREADABLE


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_refused_recipients_are_sealed_not_written_into_last_error(objects_dir, monkeypatch):  # noqa: F811
    from mail.send import outbox as outbox_module

    user = UserFactory()
    connection, _ = _box(user)
    row = _outbox(user, connection, to=["ok@example.test", "gone@nowhere-canary.test"])
    with owner_scope(user):
        OutboxMessage.objects.for_owner(user).filter(pk=row.pk).update(blob_key=blobstore.put(
            user.pk, ("outbox", str(row.pk)), b"Subject: x\r\n\r\nbody\r\n"))
    monkeypatch.setattr(outbox_module, "_smtp_deliver", lambda *args: (
        "accepted", {"gone@nowhere-canary.test": (550, b"no such user")}))
    blobstore.key_cache.clear()  # a fresh worker-sync: the metadata key is read (under RLS), not cached
    assert outbox_module.send(_NoPasswords(), user.pk, row.pk) == "sent"
    with db_connection.cursor() as cursor, owner_scope(user):
        cursor.execute("SELECT status, last_error FROM mail_outboxmessage WHERE id = %s", [str(row.pk)])
        status, last_error = cursor.fetchone()
    assert status == "sent" and "nowhere-canary" not in last_error
    shown = _api(user).get(f"/api/v1/outbox/{row.pk}").json()
    assert shown["last_error"] == f"{outbox_module.REFUSED_SOME}: gone@nowhere-canary.test"
    assert shown["to"] == ["ok@example.test", "gone@nowhere-canary.test"]  # re-sealed with the row, still there


def _legacy_outbox(user, connection, count):
    rows = [_outbox(user, connection, to=[f"legacy{n}@example.test"], subject=f"Legacy send {n}") for n in range(count)]
    with owner_scope(user):
        for row in rows:
            OutboxMessage.objects.for_owner(user).filter(pk=row.pk).update(
                to_ct=None, cc_ct=None, subject_ct=None, in_reply_to_ct=None, refused_ct=None,
                legacy_to_addrs=row.to_addrs, legacy_cc_addrs=row.cc_addrs, legacy_subject=row.subject)
    return rows


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_metadata_encrypt_seals_legacy_outbox_rows_and_rotation_reencrypts_them(objects_dir, settings):  # noqa: F811
    user = UserFactory()
    connection, _ = _box(user)
    rows = _legacy_outbox(user, connection, 3)

    def plaintext_left():
        with db_connection.cursor() as cursor, owner_scope(user):
            cursor.execute("SELECT count(*) FROM mail_outboxmessage WHERE owner_id = %s AND (subject <> '' "
                           "OR to_addrs::text <> '[]' OR cc_addrs::text <> '[]')", [str(user.pk)])
            return cursor.fetchone()[0]

    with owner_scope(user):  # an older release wrote the refused recipients into last_error
        OutboxMessage.objects.for_owner(user).filter(pk=rows[0].pk).update(
            last_error="Refused by the server for: gone@refused-canary.test, x@refused-canary.test")
    assert plaintext_left() == 3
    assert _api(user).get(f"/api/v1/outbox/{rows[1].pk}").json()["subject"] == "Legacy send 1"  # still shown
    call_command("metadata_encrypt", "--owner", str(user.pk), stdout=StringIO())
    assert plaintext_left() == 0
    with db_connection.cursor() as cursor, owner_scope(user):
        cursor.execute("SELECT count(*) FROM mail_outboxmessage WHERE last_error LIKE %s", ["%refused-canary%"])
        assert cursor.fetchone()[0] == 0
    assert _api(user).get(f"/api/v1/outbox/{rows[0].pk}").json()["last_error"] == (
        f"{OutboxMessage.REFUSED_SOME}: gone@refused-canary.test, x@refused-canary.test")
    with owner_scope(user):
        for stored in OutboxMessage.objects.for_owner(user):
            assert stored.to_ct is not None and stored.subject.startswith("Legacy send")
    listing = _api(user).get("/api/v1/outbox").json()["results"]
    assert sorted((m["subject"], m["to"][0], m["cc"]) for m in listing) == [
        (f"Legacy send {n}", f"legacy{n}@example.test", ["boss@example.test"]) for n in range(3)]

    out = StringIO()
    call_command("metadata_encrypt", "--owner", str(user.pk), "--rotate", stdout=out)
    assert "3 re-encrypted, 0 failed" in out.getvalue()  # the outbox rows (no messages here)
    settings.AIEMAILY_STORAGE_KEY_CACHE_SECONDS = 0
    call_command("metadata_encrypt", "--owner", str(user.pk), "--rotate", "--resume", stdout=StringIO())
    blobstore.key_cache.clear()
    with owner_scope(user):
        assert list(MetadataKey.objects.for_owner(user).filter(purpose="fields").values_list("version", flat=True)) \
            == [2]  # version 1 is gone: every outbox column must now open under version 2
        for stored in OutboxMessage.objects.for_owner(user):
            assert parse_header(bytes(stored.subject_ct)).key_version == 2
            assert stored.subject.startswith("Legacy send") and not metadata.unreadable(stored)


def test_an_outbox_field_is_bound_to_outbox_rows_not_messages():
    owner, row = uuid.uuid4(), uuid.uuid4()
    assert metadata.field_aad(owner, row, "subject", metadata.OUTBOX) == canonical_aad(
        {"owner_id": str(owner), "outbox_id": str(row), "field": "subject", "purpose": "outbox-metadata"})
    assert metadata.field_aad(owner, row, "subject", metadata.OUTBOX) != metadata.field_aad(owner, row, "subject")


# --- staff see that a message exists, not what it says ------------------------------------------------

@pytest.mark.django_db(transaction=True, databases=["default", "maintenance", "vault", "keys"])
def test_staff_admin_shows_metadata_as_encrypted(objects_dir):  # noqa: F811
    owner = UserFactory()
    connection, folder = _box(owner)
    (row,) = _store(owner, connection, folder, [("Payroll for December", "hr@example.test", "salaries")])
    client = staff_admin_client(UserFactory(is_staff=True, is_superuser=True))
    for url in ("/admin/mail/message/", f"/admin/mail/message/{row.pk}/change/"):
        html = client.get(url).content.decode()
        assert "encrypted" in html and "Payroll" not in html and "hr@example.test" not in html, url


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_a_search_before_any_mail_makes_no_key_and_finds_nothing(objects_dir):  # noqa: F811
    user = UserFactory()
    assert _search_ids(_api(user), "anything") == set()
    with owner_scope(user):
        assert not MetadataKey.objects.for_owner(user).exists()  # the web process only reads keys


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_a_sync_batch_opens_each_key_once_not_per_row(objects_dir, monkeypatch):  # noqa: F811
    user = UserFactory()
    connection, folder = _box(user)
    _store(user, connection, folder, [("warm up", "a@example.test", "")])  # the keys exist
    blobstore.key_cache.clear()  # a fresh sync worker
    unwraps, opened = [], []
    real_unwrap, real_open = blobstore.storage_kms().unwrap, blobstore.open_field
    monkeypatch.setattr(blobstore.storage_kms(), "unwrap", lambda *a, **k: unwraps.append(1) or real_unwrap(*a, **k))
    monkeypatch.setattr(blobstore, "open_field", lambda *a: opened.append(a[1]) or real_open(*a))
    with owner_scope(user):
        rows = [Message(owner=user, connection=connection, folder=folder, uidvalidity=2, uid=n, subject=f"Batch {n}",
                        from_addr=f"s{n}@example.test", snippet="x", date=BASE) for n in range(300)]
        Message.objects.bulk_create(rows, ignore_conflicts=True)
    assert len(unwraps) == 1  # the storage key, once
    assert sorted(opened) == ["metadata-key/fields-v1", "metadata-key/index-v1"]  # each metadata key, once
    assert len(_search_ids(_api(user), "batch")) == 300


def test_the_associated_data_is_the_canonical_encoding_of_owner_message_and_field():
    owner, message = uuid.uuid4(), uuid.uuid4()
    for field in metadata.FIELDS:
        assert metadata.field_aad(owner, str(message).upper(), field) == canonical_aad(
            {"owner_id": str(owner), "message_id": str(message), "field": field, "purpose": "message-metadata"})
    with pytest.raises(ValueError):
        metadata.field_aad(owner, 'x","owner_id":"y', "subject")  # not a UUID: refused, never spliced in
    with pytest.raises(ValueError):
        metadata.field_aad(owner, message, 'subject","x":"y')
