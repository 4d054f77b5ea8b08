"""The mail app's worker tasks, by name, for the services that queue them (web, and the workers).

`mail.services` queues these after commit; `mail.tasks` calls `mail.services` (to record an outcome,
to queue the next round). Naming the tasks keeps that one-way: the services never import the
tasks module, so there is no import cycle, and the web process never loads worker-sync's code.
The routing table sends each name to its queue; tests/project/test_tasks_by_name.py checks every
name below against the tasks the workers register.
"""

from aiemaily.celery import TaskByName

connection_verify = TaskByName("mail.tasks.connection_verify")
connection_sync = TaskByName("mail.tasks.connection_sync")
idle_watch = TaskByName("mail.tasks.idle_watch")
outbox_send = TaskByName("mail.tasks.outbox_send")
gmail_sync = TaskByName("mail.tasks.gmail_sync")
graph_sync = TaskByName("mail.tasks.graph_sync")
message_action = TaskByName("mail.tasks.message_action")
push_open = TaskByName("mail.tasks.push_open")
push_close = TaskByName("mail.tasks.push_close")
# worker-ai's, queued by the assistant's services: web never loads the prompt builder or the AI clients.
result_run = TaskByName("mail.assistant.tasks.result_run")
result_run_leased = TaskByName("mail.assistant.tasks.result_run_leased")
