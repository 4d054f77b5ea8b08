"""A long thread sends a provider a bounded prompt: the newest e-mails first, the oldest left out."""

import os
import subprocess
import sys

import pytest

from mail.assistant import prompts
from mail.assistant.thread import MailText


def _mail(number: int, size: int) -> MailText:
    return MailText(sender=f"s{number}@example.org", to=[], date="2026-12-01", subject=f"Subject {number}",
                    text=f"Body-{number}-start " + "x" * size + f" Body-{number}-end")


def test_a_thread_within_the_budget_is_sent_whole():
    thread = [_mail(n, 100) for n in range(1, 6)]
    kept, omitted = prompts.fit(thread, 10_000)
    _system, user = prompts.build("summary", kept, omitted=omitted)
    assert omitted == 0
    for n in range(1, 6):
        assert f"Body-{n}-start" in user and f"Body-{n}-end" in user
    assert "left out" not in user


def test_the_oldest_emails_are_left_out_and_said_to_be():
    thread = [_mail(n, 20_000) for n in range(1, 51)]  # 50 e-mails of 20,000 characters: a megabyte
    kept, omitted = prompts.fit(thread, 48_000)
    _system, user = prompts.build("summary", kept, omitted=omitted)
    assert omitted == 47  # two whole e-mails and the start of a third fit
    assert len(user) < 48_000 + 2_000  # headers and markers on top of the mail text
    assert "Body-50-start" in user and "Body-50-end" in user  # the newest e-mail whole
    assert "Body-1-start" not in user
    assert "[47 earlier e-mails of this thread left out" in user
    # What is sent stays in thread order, numbered as in the thread.
    assert user.index("--- e-mail 49 ---") < user.index("--- e-mail 50 ---")


def test_an_email_longer_than_the_budget_keeps_its_beginning():
    kept, omitted = prompts.fit([_mail(1, 100_000)], 5_000)
    _system, user = prompts.build("draft", kept, omitted=omitted)
    assert omitted == 0
    assert "Body-1-start" in user and "Body-1-end" not in user
    assert "the rest of this e-mail is left out" in user
    assert len(user) < 5_000 + 1_000


def test_the_setting_bounds_what_the_worker_sends(settings):
    settings.AIEMAILY_AI_MAX_PROMPT_CHARS = 3_000
    kept, omitted = prompts.fit([_mail(n, 2_000) for n in range(1, 4)])
    _system, user = prompts.build("summary", kept, omitted=omitted)
    assert "Body-3-start" in user and "Body-1-start" not in user


@pytest.mark.parametrize("value", ["0", "-5", "999"])
def test_a_budget_too_small_to_hold_an_email_is_refused_at_start(value):
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], capture_output=True, text=True,
                            env={**os.environ, "AIEMAILY_AI_MAX_PROMPT_CHARS": value}, timeout=60)
    assert result.returncode != 0 and "AIEMAILY_AI_MAX_PROMPT_CHARS must be at least 1000" in result.stderr
