#!/usr/bin/env python3
"""Two users with real data, for fuzzing the API (`make fuzz`, tests/project/test_api_fuzz.py).

Run with the settings of the stack under test (DATABASE_URL or the embedded SQLite default) and
AIEMAILY_PROCESS=sync: messages are stored the way IMAP sync stores them (parsed, encrypted into
object storage). Each user gets an IMAP mailbox with a few messages in two folders, labels, audit
events, and one thread delegated to the other user. Prints a JSON object: the users' e-mail
addresses and passwords (random, made here; a throwaway stack's only). Never run it against a
deployment's database: against a deployment, make two accounts by hand (README, "Fuzzing the API").
"""

import json
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiemaily.settings")

import django  # noqa: E402

django.setup()

from django.utils import timezone  # noqa: E402

from accounts.models import User  # noqa: E402
from aiemaily.ownership.binding import owner_scope  # noqa: E402
from mail.models import Connection, Folder, Message  # noqa: E402
from mail.services import delegation_grant  # noqa: E402
from mail.sync.imap import _store_batch  # noqa: E402
from secrets_vault.services import audit_record  # noqa: E402


def _mail(n: int, sender: str, subject: str, reply_to: int | None = None) -> bytes:
    thread = f"In-Reply-To: <m{reply_to}@fuzz.test>\r\nReferences: <m{reply_to}@fuzz.test>\r\n" if reply_to else ""
    return (f"From: {sender}\r\nTo: me@fuzz.test\r\nSubject: {subject}\r\nMessage-ID: <m{n}@fuzz.test>\r\n{thread}"
            f"Date: Mon, 2 Nov 2026 {10 + n % 10}:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Message number {n}: {subject}.\r\n").encode()


def _user(name: str) -> tuple[User, str]:
    password = secrets.token_urlsafe(18)
    email = f"{name}-{secrets.token_hex(4)}@fuzz.test"
    # Confirmed addresses: only those can receive a shared thread (the seed shares one each way).
    user = User.objects.create_user(email=email, password=password, email_verified_at=timezone.now())
    return user, password


def _mailbox(owner: User, base: int) -> list[Message]:
    with owner_scope(owner):
        connection = Connection.objects.create(
            owner=owner, provider="imap", email=owner.email, status="active", imap_host="imap.fuzz.test",
            imap_port=993, imap_security="tls", imap_username=owner.email, smtp_host="smtp.fuzz.test",
            smtp_port=465, smtp_security="tls", smtp_username=owner.email)
        inbox = Folder.objects.create(owner=owner, connection=connection, name="INBOX", role="inbox")
        archive = Folder.objects.create(owner=owner, connection=connection, name="Archive", role="archive")
    raw = {uid: {b"BODY[]": _mail(base + uid, f"sender{uid}@fuzz.test", f"Subject {uid}",
                                  reply_to=base + 1 if uid == 2 else None),
                 b"FLAGS": (b"\\Seen",) if uid % 2 else ()}
           for uid in range(1, 6)}
    _store_batch(owner.pk, connection, inbox, 1, raw)
    _store_batch(owner.pk, connection, archive, 1, {1: {b"BODY[]": _mail(base + 9, "old@fuzz.test", "Old"),
                                                       b"FLAGS": ()}})
    with owner_scope(owner):
        messages = list(Message.objects.for_owner(owner).order_by("uid", "folder__name"))
        Message.objects.for_owner(owner).filter(pk=messages[0].pk).update(labels=["Work", "$Important"])
    return messages


def main() -> None:
    alice, alice_password = _user("alice")
    bob, bob_password = _user("bob")
    alice_messages, bob_messages = _mailbox(alice, 0), _mailbox(bob, 100)
    for owner, messages, other in ((alice, alice_messages, bob), (bob, bob_messages, alice)):
        with owner_scope(owner):
            delegation_grant(owner=owner, message=messages[0], email=other.email, permission="read")
            for action in ("store", "decrypt"):
                audit_record(owner_id=owner.pk, action=action, process="vault", purpose="imap_password",
                             subject=str(messages[0].connection_id), detail="seeded for fuzzing")
    print(json.dumps({"users": [{"email": alice.email, "password": alice_password},
                                {"email": bob.email, "password": bob_password}]}))


if __name__ == "__main__":
    main()
