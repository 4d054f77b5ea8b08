"""Tasks queued by name (secrets_vault.queue, mail.queue) are tasks the workers register, on their queues.

Web and the services queue worker tasks by name so that they never import the tasks' modules (the
import contracts). A name is only a string: a typo would queue a message no worker runs. Each one
is checked here against the registered task and the queue the routing table gives it.
"""

import pytest
from celery import Celery

import mail.assistant.tasks  # noqa: F401 - registers worker-ai's tasks, as worker-ai does
import mail.tasks  # noqa: F401 - registers worker-sync's tasks
import secrets_vault.tasks  # noqa: F401 - registers worker-vault's tasks
from aiemaily.celery import TaskByName, app
from mail import queue as mail_queue
from secrets_vault import queue as vault_queue

HANDLES = [(name, handle) for module in (vault_queue, mail_queue)
           for name, handle in vars(module).items() if isinstance(handle, TaskByName)]
QUEUES = {"mail.tasks.idle_watch": "idle", "mail.assistant.tasks.result_run": "ai",
          "mail.assistant.tasks.result_run_leased": "ai"}
LEASE = {"lease_id": "l1", "owner_id": "o", "connection_id": "c", "purpose": "imap_password",
         "expires_at": "2026-01-01T00:00:00+00:00", "sealed": "c2VhbGVkLWJ5dGVzLWNhbmFyeQ=="}


def test_every_task_web_queues_is_named_here():
    assert len(HANDLES) == 20


@pytest.mark.parametrize(("attribute", "handle"), HANDLES, ids=[h.name for _, h in HANDLES])
def test_each_name_is_a_registered_task_on_its_queue(attribute, handle):
    task = app.tasks[handle.name]  # KeyError: no worker registers this name
    assert task.name == handle.name and handle.name.rsplit(".", 1)[1] == attribute
    expected = QUEUES.get(handle.name, "vault" if handle.name.startswith("secrets_vault.") else "sync")
    assert app.amqp.router.route({}, handle.name)["queue"].name == expected


def test_a_signature_by_name_is_the_task_objects_signature():
    by_name = mail_queue.push_open.s(owner_id="o", connection_id="c")
    assert by_name == mail.tasks.push_open.s(owner_id="o", connection_id="c")
    assert vault_queue.oauth_revoke.si("o", "c", "gmail", "s").immutable


def test_a_send_by_name_carries_masked_argsrepr(monkeypatch):
    """A task whose module this process never imported is sent without a task object: the app
    masks its arguments all the same (aiemaily.celery.SafeReprCelery)."""
    sent = {}
    monkeypatch.setattr(Celery, "send_task", lambda self, name, args=None, kwargs=None, **options: sent.update(options))
    app.send_task("mail.tasks.connection_verify", args=[{"imap_password": LEASE}], kwargs={"owner_id": "o"})
    assert "c2VhbGVk" not in sent["argsrepr"] and "<lease imap_password>" in sent["argsrepr"]
    assert "'owner_id': 'o'" in sent["kwargsrepr"]
