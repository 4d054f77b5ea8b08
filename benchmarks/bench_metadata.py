"""Cost of sealed metadata and the keyed blind index (issue 17): the message list (50 a page) and the
search, sealed columns + index vs. plaintext columns + the old `icontains` search, same run, same data.

Two users with the same corpus of BENCH_METADATA_MESSAGES messages each (default 100,000): one as
releases before issue 17 stored it (plaintext legacy columns, no index: the list reads them as is),
one sealed and indexed. Rows are written with COPY for speed (RLS is lifted on the two tables while
loading, as bench_rls does, then forced again); the sealing and hashing are the production code's.
"""

import datetime
import json
import os
import random
import time
import uuid

import psycopg
import pytest
from django.db import connection
from django.db.models import Q
from psycopg import sql
from rest_framework.test import APIClient

from aiemaily.ownership.binding import owner_scope
from benchmarks.conftest import summary
from mail import metadata, search_index
from mail.models import Connection, Folder
from tests.conftest import OWNER_ROLE, issue_tokens
from tests.harness.factories import UserFactory

COUNT = int(os.environ.get("BENCH_METADATA_MESSAGES", "100000"))
REQUESTS = int(os.environ.get("BENCH_METADATA_REQUESTS", "40"))
TABLES = ("mail_message", "mail_messageterms")
BASE = datetime.datetime(2026, 11, 1, 12, 0, tzinfo=datetime.UTC)


def _owner_connection():
    params = connection.get_connection_params()
    params.update(user=OWNER_ROLE, autocommit=True)
    return psycopg.connect(**{k: v for k, v in params.items() if k in ("dbname", "user", "password", "host", "port",
                                                                       "autocommit")})


def _set_rls(owner, enabled: bool):
    for table in TABLES:
        verb, force = ("ENABLE", "FORCE") if enabled else ("DISABLE", "NO FORCE")
        owner.execute(sql.SQL(f"ALTER TABLE {{}} {verb} ROW LEVEL SECURITY").format(sql.Identifier(table)))
        owner.execute(sql.SQL(f"ALTER TABLE {{}} {force} ROW LEVEL SECURITY").format(sql.Identifier(table)))


def _corpus(count):
    rng = random.Random(17)
    syllables = ["ka", "lo", "mi", "ne", "su", "ra", "to", "vi", "de", "po", "an", "el", "or", "ut", "is", "be"]
    words = list(dict.fromkeys("".join(rng.choices(syllables, k=rng.randint(2, 5))) for _ in range(4000)))
    senders = [f"{rng.choice(words).title()} {rng.choice(words).title()} <{rng.choice(words)}.{n}@"
               f"{rng.choice(words)}.example>" for n in range(800)]
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf-like: a few common words, many rare
    for n in range(count):
        subject = " ".join(rng.choices(words, weights, k=rng.randint(3, 8))).capitalize()
        yield n, subject, rng.choice(senders), " ".join(rng.choices(words, weights, k=18))[:300], words, senders


def _load(user, conn_row, folder, *, sealed: bool):
    columns = ["id", "owner_id", "connection_id", "folder_id", "uidvalidity", "uid", "provider_id", "message_id",
               "thread_id", "from_addr", "to_addrs", "cc_addrs", "subject", "date", "flags", "labels", "unread",
               "size", "snippet", "blob_key", "parse_error", "created_at", *metadata.SEALED_COLUMNS]
    terms = 0
    with owner_scope(user):
        key = search_index.index_key(user.pk) if sealed else None
        if sealed:
            metadata.seal_value(user.pk, uuid.uuid4(), "subject", b"")  # the metadata key, made and cached
    started = time.perf_counter()
    message_copy = sql.SQL("COPY mail_message ({}) FROM STDIN").format(sql.SQL(", ").join(map(sql.Identifier,
                                                                                          columns)))
    term_copy = sql.SQL("COPY mail_messageterms (owner_id, message_id, terms) FROM STDIN")
    # Two connections, streaming: the index rows' COPY ends after the messages' COPY has committed,
    # so its foreign-key check finds every message. The owner's binding holds throughout: sealing
    # reads the metadata key again whenever the process cache lets it expire (a long load outlives it).
    with owner_scope(user), _owner_connection() as terms_conn, _owner_connection() as messages_conn:
        with terms_conn.cursor() as term_cursor, term_cursor.copy(term_copy) as term_out:
            with messages_conn.cursor() as cursor, cursor.copy(message_copy) as copy:
                for n, subject, sender, snippet, _, _ in _corpus(COUNT):
                    pk = uuid.uuid4()
                    to, cc = ["me@example.test"], []
                    plain = [sender, json.dumps(to), json.dumps(cc), subject]
                    ct, snippet_plain = [None] * 5, snippet
                    if sealed:
                        values = {"subject": subject, "from_addr": sender, "to_addrs": to, "cc_addrs": cc,
                                  "snippet": snippet}
                        ct = [metadata.seal_value(user.pk, pk, f, metadata._encode(kind, values[f]))
                              for f, (_, _, kind) in metadata.FIELDS.items()]
                        hashes = sorted({search_index.term_hash(key, term)
                                         for term in search_index.document_terms(subject=subject, sender=sender)})
                        term_out.write_row([user.pk, pk, "{" + ",".join(map(str, hashes)) + "}"])
                        terms += len(hashes)
                        plain, snippet_plain = ["", "[]", "[]", ""], ""
                    copy.write_row([pk, user.pk, conn_row.pk, folder.pk, 1, n + 1, "", f"<b{n}@bench.example>",
                                    "", *plain, BASE - datetime.timedelta(minutes=n), "[]", "[]", n % 3 == 0, 2048,
                                    snippet_plain, "", "", BASE, *ct])
        messages_conn.execute("ANALYZE mail_message")
        messages_conn.execute("ANALYZE mail_messageterms")
    return time.perf_counter() - started, terms


def _old_search(queryset, owner, query):
    """The search before issue 17: a substring of the plaintext subject or sender."""
    return queryset.filter(Q(legacy_subject__icontains=query) | Q(legacy_from_addr__icontains=query))


@pytest.mark.django_db(transaction=True)
def test_message_list_and_search_sealed_vs_plaintext(record_benchmark, monkeypatch):
    users = {}
    with _owner_connection() as owner:
        _set_rls(owner, False)
    try:
        load = {}
        for mode in ("plaintext", "sealed"):
            user = UserFactory()
            with owner_scope(user):
                conn_row = Connection.objects.create(owner=user, provider="imap", email=user.email, status="active")
                folder = Folder.objects.create(owner=user, connection=conn_row, name="INBOX", role="inbox")
            load[mode] = _load(user, conn_row, folder, sealed=mode == "sealed")
            users[mode] = user
    finally:
        with _owner_connection() as owner:
            _set_rls(owner, True)

    _, _, _, _, words, senders = next(_corpus(1))
    sample = [(s, f) for _, s, f, _, _, _ in _corpus(2000)]
    common = words[3]  # frequent (Zipf rank 4)
    rare = next(w for w in words[1500:] if any(w in s.split() for s, _ in sample))
    address = sample[5][1].rsplit("<", 1)[1].rstrip(">")
    prefix = words[40][:4]
    queries = {"common word": common, "rare word": rare, "sender address": address, "4-letter prefix": prefix}

    clients = {}
    for mode, user in users.items():
        clients[mode] = APIClient()
        clients[mode].credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(clients[mode], user)["access"])

    def get(mode, url):
        response = clients[mode].get(url)
        assert response.status_code == 200
        return response

    results = {}
    urls = [("list, first page", "/api/v1/messages?limit=50")] + [
        (f"search: {name}", f"/api/v1/messages?limit=50&q={q}") for name, q in queries.items()]
    for label, url in urls:
        samples = {"plaintext": [], "sealed": []}
        counts = {}
        for round_number in range(5 + REQUESTS):  # request by request, alternating: load drift hits both
            for mode in ("plaintext", "sealed"):
                with monkeypatch.context() as patch:
                    if mode == "plaintext":
                        patch.setattr(search_index, "search_filter", _old_search)
                    started = time.perf_counter()
                    response = get(mode, url)
                    elapsed = time.perf_counter() - started
                if round_number >= 5:
                    samples[mode].append(elapsed)
                counts[mode] = len(response.json()["results"])
        for mode in samples:
            results[(label, mode)] = (summary(samples[mode]), counts[mode])

    rows = []
    for label in dict.fromkeys(label for label, _ in results):
        (plain, n_plain), (sealed, n_sealed) = results[(label, "plaintext")], results[(label, "sealed")]
        rows.append(f"| {label} | {n_plain} / {n_sealed} | {plain['median_ms']:.2f} | {sealed['median_ms']:.2f} | "
                    f"{sealed['median_ms'] / plain['median_ms']:.2f}× |")
        print(label, n_plain, n_sealed, f"{plain['median_ms']:.2f}", f"{sealed['median_ms']:.2f}")
    list_ratio = results[("list, first page", "sealed")][0]["median_ms"] / \
        results[("list, first page", "plaintext")][0]["median_ms"]
    search_ratio = max(results[(f"search: {n}", "sealed")][0]["median_ms"] /
                       results[(f"search: {n}", "plaintext")][0]["median_ms"] for n in queries)
    table = "\n".join(rows)
    load_average = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    record_benchmark("metadata", f"""
## Sealed metadata and the keyed search index

`GET /api/v1/messages?limit=50[&q=…]` through the full stack (JWT, owner binding, RLS, cursor
pagination, triage join), one user with {COUNT:,} messages per mode, {REQUESTS} requests per line
after 5 warm-up requests, the two modes alternating request by request (the machine is shared: load
average {load_average} at the end of the run, so absolute times are inflated; the ratios are the result).
**Baseline (plaintext)**: the same corpus as releases before issue 17 stored it (plaintext
columns) with the old search (`icontains` on subject or sender). **Sealed**: subject, from, to, cc
and snippet sealed per field under the user's metadata key
(mail/metadata.py; the list decrypts only the 50 rows it returns), search through the keyed blind
index (mail/search_index.py: one row per message, {load['sealed'][1]:,} 64-bit term hashes in `bigint[]`
arrays under a GIN index, queried with `@>`; the page re-checked against the decrypted subject and
sender). Loading took
{load['plaintext'][0]:.0f} s plaintext and {load['sealed'][0]:.0f} s sealed (sealing + hashing
+ COPY). Results: rows on the page, plaintext / sealed (a prefix or word search counts whole-word
matches where the old search also matched inside words).

| request | results | plaintext median ms | sealed median ms | sealed / plaintext |
|---|---|---|---|---|
{table}

**List: {list_ratio:.2f}× (goal ≤ 1.3×); search, worst case: {search_ratio:.2f}× (goal ≤ 2×).**
""")


@pytest.mark.django_db(transaction=True)
def test_sync_batch_write_sealed_vs_plaintext(record_benchmark, monkeypatch):
    """The sync's write of one batch (500 rows): sealed + indexed (Message.objects.bulk_create, as the
    sync paths call it) vs. the same rows sealed without the index, and with plaintext columns through
    the plain QuerySet insert; the three modes alternate batch by batch."""
    from mail.models import Message

    batches = int(os.environ.get("BENCH_METADATA_BATCHES", "12"))
    user = UserFactory()
    with owner_scope(user):
        conn_row = Connection.objects.create(owner=user, provider="imap", email=user.email, status="active")
        folder = Folder.objects.create(owner=user, connection=conn_row, name="INBOX", role="inbox")
    corpus = [(s, f, sn) for _, s, f, sn, _, _ in _corpus(500)]
    modes = ("plaintext", "sealed, no index", "sealed + indexed")
    samples = {mode: [] for mode in modes}
    real_terms = search_index.message_terms
    uid = 0
    for number in range(batches + 1):  # the first round warms the key caches and is not counted
        for mode in modes:
            rows = []
            for subject, sender, snippet in corpus:
                uid += 1
                common = dict(owner=user, connection=conn_row, folder=folder, uidvalidity=1, uid=uid, date=BASE,
                              blob_key="")
                if mode != "plaintext":
                    rows.append(Message(**common, subject=subject, from_addr=sender, to_addrs=["me@example.test"],
                                        snippet=snippet))
                else:
                    rows.append(Message(**common, legacy_subject=subject, legacy_from_addr=sender,
                                        legacy_to_addrs=["me@example.test"], legacy_snippet=snippet))
            monkeypatch.setattr(search_index, "message_terms",
                                real_terms if mode == "sealed + indexed" else lambda *args, **kwargs: None)
            started = time.perf_counter()
            with owner_scope(user):
                if mode != "plaintext":
                    Message.objects.bulk_create(rows, ignore_conflicts=True)
                else:
                    Message.objects.for_owner(user).bulk_create(rows, ignore_conflicts=True)
            if number:
                samples[mode].append(time.perf_counter() - started)
    plain, bare, sealed = (summary(samples[mode]) for mode in modes)
    print("sync batch write", f"{plain['median_ms']:.1f}", f"{bare['median_ms']:.1f}", f"{sealed['median_ms']:.1f}")
    load_average = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    record_benchmark("metadata-write", f"""
## Sync batch write with sealed metadata

One sync batch of 500 rows written in one transaction under the owner's binding, {batches} batches
per mode, the three modes alternating batch by batch (load average {load_average} at the end).
**Plaintext**: the rows' plaintext columns through the plain QuerySet insert (what the sync wrote
before issue 17). **Sealed, no index**: `Message.objects.bulk_create` with the term hashes switched
off: five fields sealed per row (metadata key from the process cache) and the existence check of
`ignore_conflicts`. **Sealed + indexed**: the same plus the keyed index, as the sync paths run it:
the term hashes of each message (HMAC-SHA256 cut to 64 bits) and one index row per message holding
them as one `bigint[]` under a GIN index (the synthetic corpus has about 60 index terms per message;
real subjects and senders about 25-35).
Body encryption and the IMAP fetch, the same in all three, are not included.

| mode | median ms per batch | per message ms |
|---|---|---|
| plaintext | {plain['median_ms']:.1f} | {plain['median_ms'] / 500:.3f} |
| sealed, no index | {bare['median_ms']:.1f} | {bare['median_ms'] / 500:.3f} |
| sealed + indexed | {sealed['median_ms']:.1f} | {sealed['median_ms'] / 500:.3f} |

**Sealed + indexed / plaintext: {sealed['median_ms'] / plain['median_ms']:.2f}×**
(+{(sealed['median_ms'] - plain['median_ms']) / 500:.2f} ms per message); the index's own share:
**{sealed['median_ms'] / bare['median_ms']:.2f}×** the sealed write without it
(+{(sealed['median_ms'] - bare['median_ms']) / 500:.2f} ms per message).
""")
