"""Acting on messages at the provider (IMAP): archive, labels, read/unread — then locally.

The provider is the source of truth: a change is applied there first (MOVE / UID STORE) and
reflected in our rows only after the server said OK. Labels on IMAP are keywords (RFC 3501 flags
without a backslash), which Dovecot, Fastmail and others store per message.
"""

import re

from aiemaily.ownership.binding import owner_scope
from mail.models import Folder, Message

LABEL = re.compile(r"^[A-Za-z0-9_.$-][A-Za-z0-9_.$-]{0,63}$")  # an IMAP atom, no specials or spaces


def _folder_named(client, special: bytes, fallbacks: tuple[str, ...]) -> str:
    for flags, _, name in client.list_folders():
        if special in flags:
            return name
    for name in fallbacks:
        if client.folder_exists(name):
            return name
    client.create_folder(fallbacks[0])
    return fallbacks[0]


def archive(client, owner_id, message: Message) -> None:
    target = _folder_named(client, b"\\Archive", ("Archive", "Archives"))
    if message.folder.name == target:
        return
    client.select_folder(message.folder.name)
    if b"MOVE" in client.capabilities():
        client.move([message.uid], target)
    else:  # RFC 3501 fallback: copy, flag deleted, expunge just this UID
        client.copy([message.uid], target)
        client.add_flags([message.uid], [b"\\Deleted"])
        client.uid_expunge([message.uid])
    info = client.select_folder(target, readonly=True)
    new_uids = client.search(["HEADER", "Message-ID", message.message_id]) if message.message_id else []
    with owner_scope(owner_id):
        folder, _ = Folder.objects.for_owner(owner_id).get_or_create(
            owner_id=owner_id, connection_id=message.connection_id, name=target, defaults={"role": "archive"})
        if new_uids:
            Message.objects.for_owner(owner_id).filter(pk=message.pk).update(
                folder=folder, uid=max(new_uids), uidvalidity=int(info[b"UIDVALIDITY"]))
        else:
            # No way to find its new UID: drop our row, the next sync of the archive brings it back.
            Message.objects.for_owner(owner_id).filter(pk=message.pk).delete()


def set_labels(client, owner_id, message: Message, add: list[str], remove: list[str]) -> None:
    client.select_folder(message.folder.name)
    if add:
        client.add_flags([message.uid], [label.encode() for label in add])
    if remove:
        client.remove_flags([message.uid], [label.encode() for label in remove])
    labels = [label for label in message.labels if label not in remove]
    labels += [label for label in add if label not in labels]
    with owner_scope(owner_id):
        Message.objects.for_owner(owner_id).filter(pk=message.pk).update(labels=labels)


def set_read(client, owner_id, message: Message, unread: bool) -> None:
    client.select_folder(message.folder.name)
    if unread:
        client.remove_flags([message.uid], [b"\\Seen"])
    else:
        client.add_flags([message.uid], [b"\\Seen"])
    flags = [f for f in message.flags if f != "\\Seen"] + ([] if unread else ["\\Seen"])
    with owner_scope(owner_id):
        Message.objects.for_owner(owner_id).filter(pk=message.pk).update(unread=unread, flags=flags)
