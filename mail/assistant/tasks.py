"""Tasks of the `ai` queue (worker-ai). They take ids (and, for BYOK, a lease sealed to this pool)."""

from celery import shared_task

from mail.assistant import runner


@shared_task(name="mail.assistant.tasks.result_run")
def result_run(owner_id, result_id):
    """Offline default or platform key: nothing to lease."""
    return runner.result_run(owner_id=owner_id, result_id=result_id)


@shared_task(name="mail.assistant.tasks.result_run_leased")
def result_run_leased(lease, owner_id, result_id):
    """Chained after secrets_vault.tasks.ai_key_lease: receives the user's key sealed to the ai pool."""
    return runner.result_run(owner_id=owner_id, result_id=result_id, lease=lease)
