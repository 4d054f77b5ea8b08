"""The keyed blind index that lets the mailbox search encrypted metadata without plaintext in the DB.

Each message's subject and sender are cut into normalised terms (case-folded, accents stripped,
NFKD): whole words, word prefixes of PREFIX_MIN..PREFIX_MAX characters (typeahead), the sender's
address and its domain. A term is stored only as HMAC-SHA256(index key, kind || term) cut to its
first 64 bits, and a message's terms together: one MessageTerms row per message (an owned table
under RLS) holding them as one array, `bigint[]` with a GIN index on PostgreSQL, queried with
`@>` (every term of the query). A search hashes its own terms the same way: the database never
sees a word. A sync batch writes one index row per message, not one per term (docs/BENCHMARKS.md).

64 bits are plenty: a message has about 25-60 terms, so a wrong term matches one of a 100,000-message
mailbox's hashes with probability about 6e6 / 2^64 ≈ 3e-13 per search, and such a false match is
only ever one of the searcher's own messages. Even so, `recheck` drops it: the rows of a page are
decrypted to be shown anyway, and their plaintext is tested against the query's terms.

The index key is per user: 32 random bytes, sealed under the owner's storage key
(mail/metadata_keys.py). Shredding the storage keys (account deletion) makes it
unrecoverable, and with it any way to test a guessed word against a backup of the index.
What the index reveals to someone holding the database: which of one user's messages share a term,
and how many terms each message has; not the terms themselves, and nothing across users
(docs/security-model.md). A delegate, who may read a shared thread's message rows, never reads
their index rows (owner-only RLS), so never learns a hash of a word it knows.
"""

import hashlib
import hmac
import re
import unicodedata

from django.conf import settings
from django.db import models

from aiemaily import bulk_insert
from aiemaily.ownership.models import OwnedModel
from mail import metadata_keys

PREFIX_MIN, PREFIX_MAX = 3, 10
_WORD = re.compile(r"[^\W_]+")
_ADDRESS = re.compile(r"[^\s<>,;:\"'()\[\]]+@[^\s<>,;:\"'()\[\]]+\.[^\s<>,;:\"'()\[\]]+")


class TermHashesField(models.Field):
    """A set of 64-bit term hashes (signed ints): `bigint[]` on PostgreSQL, where a GIN index serves
    `@>`; on SQLite (`make run`) a text " h1 h2 … " searched with LIKE '% h %' per term (a scan of
    one user's rows, fine for a development database)."""

    description = "keyed term hashes"

    def db_type(self, connection):
        return "bigint[]" if connection.vendor == "postgresql" else "text"

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None:
            return None
        if connection.vendor == "postgresql":
            # One array literal: a batch's 15,000-30,000 hashes cost one join, not an adapter per element.
            return "{" + ",".join(map(str, value)) + "}"
        return " " + " ".join(map(str, value)) + " "

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        if isinstance(value, str):
            return [int(v) for v in value.split()] if not value.startswith("{") else \
                [int(v) for v in value.strip("{}").split(",") if v]
        return list(value)


@TermHashesField.register_lookup
class ContainsAll(models.Lookup):
    """`terms__contains_all=[h1, h2]`: the row holds every one of these hashes."""

    lookup_name = "contains_all"

    def as_sql(self, compiler, connection):  # SQLite and anything else without arrays
        lhs, lhs_params = self.process_lhs(compiler, connection)
        hashes = list(self.rhs)
        if not hashes:
            return "1 = 1", []
        return " AND ".join([f"{lhs} LIKE %s"] * len(hashes)), \
            [p for h in hashes for p in (*lhs_params, f"% {int(h)} %")]

    def as_postgresql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs} @> %s::bigint[]", [*lhs_params, "{" + ",".join(str(int(h)) for h in self.rhs) + "}"]


class MessageTerms(OwnedModel):
    """The term hashes of one message. Written with the message's sealed columns (mail/metadata.py),
    deleted with the message and with its owner. Owner-only RLS, no delegate policy."""

    message = models.OneToOneField("mail.Message", on_delete=models.CASCADE, primary_key=True, related_name="+")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False,
                              editable=False)  # lookups go by message or by hash; deletion by owner is rare
    terms = TermHashesField()

    class Meta:
        app_label = "mail"
        # The GIN index on `terms` is PostgreSQL-only, made by migration 0011 (SQLite has none).

    def __str__(self):
        return "search terms (keyed hashes)"


# --- normalisation --------------------------------------------------------------------------------

def normalise(text: str) -> str:
    """Case-folded, compatibility-decomposed, without combining accents: 'Élan' and 'elan' agree."""
    decomposed = unicodedata.normalize("NFKD", text or "")
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _word_terms(word: str) -> set[tuple[str, str]]:
    terms = {("p", word[:n]) for n in range(PREFIX_MIN, min(len(word), PREFIX_MAX) + 1)}
    if not PREFIX_MIN <= len(word) <= PREFIX_MAX:
        terms.add(("w", word))  # short or long words: the whole word (a prefix term covers the rest)
    return terms


def document_terms(*, subject: str, sender: str) -> set[tuple[str, str]]:
    """What a message is findable by: the words of its subject and sender, and the sender's
    addresses and their domains."""
    terms: set[tuple[str, str]] = set()
    text = normalise(f"{subject} {sender}")
    for word in _WORD.findall(text):
        terms |= _word_terms(word)
    for address in _ADDRESS.findall(normalise(sender)):
        terms.add(("a", address))
        terms.add(("a", address.rsplit("@", 1)[1]))
    return terms


def query_terms(query: str) -> list[tuple[str, str]]:
    """The terms a search needs, all of them (AND): a whole address (or domain after '@') as one
    term, any other token as its words, each matched as a prefix when PREFIX_MIN..PREFIX_MAX long
    and as a whole word otherwise."""
    terms: list[tuple[str, str]] = []
    for token in normalise(query).split():
        if _ADDRESS.fullmatch(token):
            terms.append(("a", token))
            continue
        if token.startswith("@") and _ADDRESS.fullmatch("x" + token):
            terms.append(("a", token[1:]))
            continue
        for word in _WORD.findall(token):
            terms.append(("p", word) if PREFIX_MIN <= len(word) <= PREFIX_MAX else ("w", word))
    return list(dict.fromkeys(terms))


# --- the key and the hashes -----------------------------------------------------------------------

def index_key(owner_id) -> bytes:
    """The owner's index key (mail/metadata_keys.py), made on first use. Call inside the owner's binding."""
    return metadata_keys.user_key(owner_id, metadata_keys.MetadataKey.Purpose.INDEX)[1]


def _as_int(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big", signed=True)  # a bigint: the first 64 bits, two's complement


def term_hash(key: bytes, term: tuple[str, str]) -> int:
    kind, value = term
    return _as_int(hmac.digest(key, f"{kind}\x00{value}".encode(), "sha256"))


def _hasher(key: bytes):
    """term_hash for many terms: the keyed HMAC state is set up once and copied per term (about a
    third cheaper than re-keying for each of a batch's tens of thousands of terms)."""
    keyed = hmac.new(key, digestmod=hashlib.sha256)

    def digest(term: tuple[str, str]) -> int:
        state = keyed.copy()
        state.update(f"{term[0]}\x00{term[1]}".encode())
        return _as_int(state.digest())

    return digest


def message_terms(owner_id, *, subject: str, sender: str) -> list[int]:
    """The sorted term hashes of a message with this subject and sender. Call inside the owner's binding."""
    digest = _hasher(index_key(owner_id))
    return sorted({digest(term) for term in document_terms(subject=subject, sender=sender)})


def terms_rows(messages) -> list[MessageTerms]:
    """The index rows of these messages, from the hashes `metadata.seal_all` left on them."""
    return [MessageTerms(message_id=m.pk, owner_id=m.owner_id, terms=m.__dict__["_search_terms"])
            for m in messages if m.__dict__.get("_search_terms") is not None]


def rows_write(messages, *, replace: bool) -> int:
    """Write (or, `replace`, rewrite) the index rows of these saved messages. Call inside the owner's
    binding. Returns the number of rows written."""
    rows = terms_rows(messages)
    if not rows:
        return 0
    if replace:
        MessageTerms.objects.bulk_create(rows, update_conflicts=True, unique_fields=["message"],
                                         update_fields=["terms"])
    elif bulk_insert.insert_new(MessageTerms, rows) is None:  # None: not PostgreSQL
        MessageTerms.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def search_filter(queryset, owner, query: str):
    """`queryset` narrowed to the messages matching every term of `query`, through the index only.
    A query without any term matches nothing new (the caller's queryset as is)."""
    terms = query_terms(query)
    if not terms:
        return queryset
    owner_id = getattr(owner, "pk", owner)
    # Never made here: the web process may unwrap storage keys but not make them, and a user
    # without an index key has nothing indexed.
    key = metadata_keys.user_key(owner_id, metadata_keys.MetadataKey.Purpose.INDEX, create=False)[1]
    if not key:
        return queryset.none()
    hits = MessageTerms.objects.for_owner(owner_id).filter(terms__contains_all=[term_hash(key, t) for t in terms])
    return queryset.filter(id__in=hits.values("message_id"))


def matches(message, query: str) -> bool:
    """Whether the decrypted subject and sender hold every term of `query`: what the index answered,
    without the chance of a 64-bit collision."""
    terms = query_terms(query)
    return not terms or set(terms) <= document_terms(subject=message.subject, sender=message.from_addr)


def recheck(messages, query: str | None) -> list:
    """The rows of a search page that really match (see the module docstring); all rows without a query."""
    if not query or not query_terms(query):
        return list(messages)
    return [m for m in messages if matches(m, query)]
