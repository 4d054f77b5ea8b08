"""Assistant costs: the app's own overhead per summary on top of the provider's latency (open the
BYOK lease, read and decrypt the thread, redact, build the prompt, audit, encrypt and store the
result), and the offline summary of a 50-message thread.

Baseline for the overhead: the same adapter sending the same prompt to the same local provider
(tests/harness/ai_provider_server.py, streaming), measured in the same run — the difference is ours.
Targets (issue 16): overhead p50 ≤ 50 ms; offline 50-message summary p50 ≤ 200 ms.
"""

import pytest

from aiemaily.ownership.binding import owner_scope
from benchmarks.conftest import summary, timed
from mail import blobstore
from mail.assistant import prompts, runner
from mail.assistant.models import AiResult
from mail.assistant.providers import Target, provider_for
from mail.assistant.selectors import thread_messages
from secrets_vault.crypto import SecretStr
from tests.harness.ai_provider_server import AiProviderServer
from tests.harness.factories import UserFactory
from tests.mail.test_assistant import BYOK, THREAD, _byok, _client, make_mailbox

ROUNDS = 200
OVERHEAD_TARGET_MS = 50
OFFLINE_TARGET_MS = 200


@pytest.fixture
def bench_env(settings, tmp_path):
    settings.AIEMAILY_OBJECTS_DIR = tmp_path / "objects"
    settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    blobstore._storage.cache_clear()
    server = AiProviderServer()
    server.reply = "Bob asks you to approve the quarterly budget by Friday."
    yield server
    server.stop()
    blobstore._storage.cache_clear()


def _pending(owner, message, kind=AiResult.Kind.SUMMARY):
    with owner_scope(owner):
        return AiResult.objects.create(owner=owner, message=message, kind=kind).pk


def _thread_of(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        refs = f"In-Reply-To: <t-{i - 1}@example.test>\r\nReferences: <t-0@example.test>\r\n" if i else ""
        out.append((f"From: Person {i % 7} <p{i % 7}@example.test>\r\nTo: me@example.test\r\n"
                    f"Subject: {'Re: ' if i else ''}Project plan\r\nMessage-ID: <t-{i}@example.test>\r\n{refs}"
                    f"Date: Mon, 2 Nov 2026 {8 + i // 60:02d}:{i % 60:02d}:00 +0000\r\n\r\n"
                    f"Update {i}: the project plan needs the budget review for milestone {i % 5}. "
                    f"The design team finished part {i} of the migration work this week. "
                    f"Could you confirm the schedule for the next release? Thanks for the help with item {i}.\r\n"
                    ).encode())
    return out


@pytest.mark.django_db(databases=["default", "vault"])
def test_assistant_overhead_and_offline_summary(bench_env, record_benchmark):
    server = bench_env
    client = _client(UserFactory())
    conn, messages = make_mailbox(client.user, THREAD)
    lease = _byok(client, server)
    owner = client.user

    # Baseline: the provider's own latency, through the same adapter, with the same prompt.
    with owner_scope(owner):
        thread = runner._thread(owner.pk, messages[1], "summary")
    system, user = prompts.build("summary", thread, tone="neutral", instruction="")
    target = Target(provider="openai", model="test-model", base_url=server.openai_base, key=SecretStr(BYOK))
    provider_for(target).complete(system, user, max_tokens=800)
    direct = summary(timed(lambda: provider_for(target).complete(system, user, max_tokens=800), ROUNDS))

    ids = [_pending(owner, messages[1]) for _ in range(ROUNDS + 5)]
    for result_id in ids[:5]:  # warm-up: connections, storage-key cache
        runner.result_run(owner_id=owner.pk, result_id=result_id, lease=lease)
    todo = iter(ids[5:])
    full = summary(timed(lambda: runner.result_run(owner_id=owner.pk, result_id=next(todo), lease=lease), ROUNDS))
    with owner_scope(owner):
        assert AiResult.objects.for_owner(owner).filter(status="ready", source="byok").count() == ROUNDS + 5
    overhead = full["median_ms"] - direct["median_ms"]

    # Offline: a 50-message thread, the whole worker path (read and decrypt 50 bodies, TextRank, store).
    offline_user = UserFactory()
    conn50, thread50 = make_mailbox(offline_user, _thread_of(50))
    with owner_scope(offline_user):
        assert len(thread_messages(owner_id=offline_user.pk, message=thread50[-1])) == 50
    offline_rounds = 60
    offline_ids = iter([_pending(offline_user, thread50[-1]) for _ in range(offline_rounds + 3)])
    for _ in range(3):
        runner.result_run(owner_id=offline_user.pk, result_id=next(offline_ids))
    offline_s = summary(timed(lambda: runner.result_run(owner_id=offline_user.pk, result_id=next(offline_ids)),
                              offline_rounds))

    def row(label, stats):
        return f"| {label} | {stats['median_ms']:.2f} | {stats['p95_ms']:.2f} |"

    record_benchmark("assistant", f"""
## Assistant: overhead per summary, offline summary of a long thread

A BYOK summary of a 2-message thread against the local OpenAI-compatible provider (streaming),
{ROUNDS} rounds, in one process playing worker-ai. Baseline: the same adapter sending the same prompt
to the same provider — the provider's own latency, HTTP included.

| operation | median ms | p95 ms |
|---|---|---|
{row("provider call alone (baseline)", direct)}
{row("whole summary in worker-ai (lease, decrypt, redact, audit, call, encrypt, store)", full)}
{row("offline summary of a 50-message thread (decrypt 50 bodies, TextRank, store)", offline_s)}

**App overhead per summary: {overhead:.2f} ms median** (target ≤ {OVERHEAD_TARGET_MS} ms);
offline 50-message summary {offline_s['median_ms']:.2f} ms median (target ≤ {OFFLINE_TARGET_MS} ms).
""")
    assert overhead <= OVERHEAD_TARGET_MS
    assert offline_s["median_ms"] <= OFFLINE_TARGET_MS
