"""Runs in worker-sync (sync queue): sending from the outbox and applying actions to messages at the
provider (archive, labels, flags), each with a leased credential.

Web creates the rows that ask for this work (mail/services.py: outbox_create, message_action_queue);
only worker-sync talks to the providers.
"""
