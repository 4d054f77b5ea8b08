"""Runs in worker-sync and the idle process (sync queue): IMAP, Gmail and Graph sync, IDLE, push channels.

These processes hold the sync pool's lease key and the storage key; never a KEK, never a DEK.
"""
