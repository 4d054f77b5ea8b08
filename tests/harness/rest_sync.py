"""What the Gmail and Graph sync tests share: the local provider API (tests/harness/gmail_api_server.py,
graph_api_server.py) wired into settings, and a worker killed part-way through storing a sync."""

from contextlib import contextmanager

from mail import blobstore
from mail.sync import rest as sync_rest


def use_api(server, settings, test_ca, monkeypatch, *, base_setting: str):
    """Points `base_setting` at a freshly reset local API, trusts the test CA for it, and makes the
    client's retry back-off instant so a test of retries does not sleep."""
    server.reset()
    setattr(settings, base_setting, server.base)
    settings.AIEMAILY_PROVIDER_CA_BUNDLE = str(test_ca.ca_file)
    monkeypatch.setattr(sync_rest, "BACKOFF_SECONDS", 0.001)
    return server


@contextmanager
def worker_killed_at_put(monkeypatch, nth: int):
    """Inside, the nth object written to the blob store kills the worker (KeyboardInterrupt, which no
    handler catches); on leaving, the store works again."""
    real_put, calls = blobstore.put, []

    def killed_mid_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            raise KeyboardInterrupt("worker killed")
        return real_put(*args, **kwargs)

    monkeypatch.setattr(blobstore, "put", killed_mid_batch)
    try:
        yield
    finally:
        monkeypatch.setattr(blobstore, "put", real_put)
