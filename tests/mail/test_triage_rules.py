"""The offline triage rules, one by one (mail/assistant/offline.py `triage`): list headers make a
newsletter, automated senders a notification, a direct question to me needs a reply (high when
urgent), anything else is FYI. The on-sync path is tested in test_assistant.py; this names each rule.
"""

import pytest

from mail.assistant.offline import triage
from mail.assistant.thread import MailText

ME = "me@example.test"
QUESTION = "Hello, could you send me the signed contract by Friday?"


def mail(sender="Alice <alice@example.test>", to=(ME,), subject="Contract", text=QUESTION, **headers):
    return MailText(sender, list(to), "Mon, 2 Nov 2026 10:00:00 +0000", subject, text,
                    {name.replace("_", "-"): value for name, value in headers.items()})


@pytest.mark.parametrize("headers", [
    {"list_unsubscribe": "<https://news.example/u>"},
    {"list_id": "<news.example>"},
    {"precedence": "Bulk"},
    {"precedence": "list"},
])
def test_list_headers_make_a_newsletter_even_with_a_question(headers):
    assert triage(mail(**headers), me=ME)[:2] == ("newsletter", "low")


@pytest.mark.parametrize("sender,headers", [
    ("GitHub <noreply@github.test>", {}),
    ("Shop <do-not-reply@shop.test>", {}),
    ("Bank <alerts@bank.test>", {}),
    ("MAILER-DAEMON@mx.test", {}),
    ("Alice <alice@example.test>", {"auto_submitted": "auto-replied"}),
    ("Alice <alice@example.test>", {"x_auto_response_suppress": "All"}),
    ("Alice <alice@example.test>", {"return_path": "<>"}),
])
def test_automated_senders_make_a_notification(sender, headers):
    assert triage(mail(sender=sender, **headers), me=ME)[:2] == ("notification", "low")


def test_auto_submitted_no_is_a_person():
    assert triage(mail(auto_submitted="no"), me=ME)[0] == "needs_reply"


def test_a_direct_question_needs_a_reply_and_urgency_raises_it():
    assert triage(mail(), me=ME)[:2] == ("needs_reply", "normal")
    assert triage(mail(subject="URGENT: contract"), me=ME)[:2] == ("needs_reply", "high")
    assert triage(mail(text=QUESTION + " We need it today."), me=ME)[:2] == ("needs_reply", "high")


def test_a_question_to_someone_else_or_no_question_is_fyi():
    assert triage(mail(to=("boss@example.test",)), me=ME)[0] == "fyi"
    assert triage(mail(text="The contract is signed. See you on Friday."), me=ME)[:2] == ("fyi", "normal")
    # A name that merely looks automated in the display part does not make a person a notification.
    assert triage(mail(sender="Notifications Team Lead <carol@example.test>"), me=ME)[0] == "needs_reply"
