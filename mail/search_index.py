"""The keyed blind index that lets the mailbox search encrypted metadata without plaintext in the DB.

Each message's subject and sender are cut into normalised terms (case-folded, accents stripped,
NFKD): whole words, word prefixes of PREFIX_MIN..PREFIX_MAX characters (typeahead), the sender's
address and its domain. A term is stored only as HMAC-SHA256(index key, kind || term), truncated
to 128 bits, in SearchTerm (an owned table under RLS), one row per (message, term). A search
hashes its own terms the same way and looks the hashes up: the database never sees a word.

The index key is per user: 32 random bytes, sealed under the owner's storage key
(mail/metadata_keys.py). Shredding the storage keys (account deletion) makes it
unrecoverable, and with it any way to test a guessed word against a backup of the index.
What the index reveals to someone holding the database: which of one user's messages share a term,
and how many terms each message has; not the terms themselves, and nothing across users
(docs/security-model.md).
"""

import hashlib
import hmac
import re
import unicodedata
import uuid

from django.conf import settings
from django.db import connections, models, router

from aiemaily.ownership.models import OwnedModel
from mail import metadata_keys

PREFIX_MIN, PREFIX_MAX = 3, 10
HASH_BYTES = 16  # 128 bits: no collision to fear within one user's mail, half the index size
_WORD = re.compile(r"[^\W_]+")
_ADDRESS = re.compile(r"[^\s<>,;:\"'()\[\]]+@[^\s<>,;:\"'()\[\]]+\.[^\s<>,;:\"'()\[\]]+")


class SearchTerm(OwnedModel):
    """One term of one message, as a keyed hash. Deleted with its message and with its owner.

    No foreign-key constraints in the database: a sync batch writes 15,000-30,000 of these rows, and
    PostgreSQL's per-row referential checks (message and owner) made that insert several times
    slower than the batch's messages (docs/BENCHMARKS.md). Django still cascades both (every path
    that deletes messages or users goes through the ORM); a row left behind by a delete outside
    Django points at nothing, matches no message, and goes with the account.
    """

    id = models.BigAutoField(primary_key=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False,
                              db_constraint=False, editable=False)  # the (owner, term) index serves owner lookups
    message = models.ForeignKey("mail.Message", on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)
    term = models.BinaryField(max_length=HASH_BYTES)

    class Meta:
        app_label = "mail"
        indexes = [models.Index(fields=["owner", "term"], name="searchterm_owner_term"),
                   models.Index(fields=["message"], name="searchterm_message")]

    def __str__(self):
        return "search term (keyed hash)"


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


def term_hash(key: bytes, term: tuple[str, str]) -> bytes:
    kind, value = term
    return hmac.digest(key, f"{kind}\x00{value}".encode(), "sha256")[:HASH_BYTES]


def _hasher(key: bytes):
    """term_hash for many terms: the keyed HMAC state is set up once and copied per term (about a
    third cheaper than re-keying for each of a batch's tens of thousands of terms)."""
    keyed = hmac.new(key, digestmod=hashlib.sha256)

    def digest(term: tuple[str, str]) -> bytes:
        state = keyed.copy()
        state.update(f"{term[0]}\x00{term[1]}".encode())
        return state.digest()[:HASH_BYTES]

    return digest


def messages_index(owner_id, messages, *, replace: bool = False) -> int:
    """Write the index rows of these (saved, sealed) messages; `replace` drops their old rows first.
    Call inside the owner's binding. Returns the number of rows written."""
    messages = list(messages)
    if not messages:
        return 0
    key = index_key(owner_id)
    if replace:
        SearchTerm.objects.for_owner(owner_id).filter(message_id__in=[m.pk for m in messages]).delete()
    pairs, digest = [], _hasher(key)
    for message in messages:
        pk = message.pk if isinstance(message.pk, uuid.UUID) else uuid.UUID(str(message.pk))
        pairs += [(pk, digest(term)) for term in document_terms(subject=message.subject, sender=message.from_addr)]
    alias = router.db_for_write(SearchTerm)
    if not pairs:
        return 0
    if connections[alias].vendor == "postgresql":
        # One statement, one binary parameter: a sync batch of 500 messages has 15,000-30,000
        # terms, which model instances (or arrays, element by element) cost far more to send than
        # the insert costs. Each record is the message id (16 bytes) and the hash (16 bytes), cut
        # apart by PostgreSQL. (COPY FROM is refused on a table under row-level security.)
        blob = b"".join(pk.bytes + term for pk, term in pairs)
        with connections[alias].cursor() as cursor:
            cursor.execute("INSERT INTO mail_searchterm (owner_id, message_id, term) "
                           "SELECT %s::uuid, encode(substring(b FROM i * 32 + 1 FOR 16), 'hex')::uuid, "
                           "substring(b FROM i * 32 + 17 FOR 16) "
                           "FROM (SELECT %s::bytea AS b) AS records, generate_series(0, %s - 1) AS i",
                           [str(owner_id), blob, len(pairs)])
    else:
        SearchTerm.objects.bulk_create([SearchTerm(owner_id=owner_id, message_id=pk, term=term) for pk, term in pairs],
                                       batch_size=2000)
    return len(pairs)


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
    for term in terms:
        hits = SearchTerm.objects.for_owner(owner_id).filter(term=term_hash(key, term)).values("message_id")
        queryset = queryset.filter(id__in=hits)
    return queryset
