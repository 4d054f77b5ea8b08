"""One error mechanism for the whole API: every 404, every bad query parameter, every DRF error
answers the {"error": {"code", "message"}} envelope with the right status (docs/api.md)."""

import base64
import uuid

import pytest

from tests.harness.factories import audit_event

pytestmark = [pytest.mark.django_db(databases=["default", "vault"]), pytest.mark.sqlite_smoke]

NOT_FOUND = {"error": {"code": "not_found", "message": "Not found."}}


@pytest.mark.parametrize(("method", "template"), [
    ("get", "/api/v1/messages/{id}"), ("get", "/api/v1/connections/{id}"), ("delete", "/api/v1/connections/{id}"),
    ("post", "/api/v1/connections/{id}/sync"), ("get", "/api/v1/outbox/{id}"), ("get", "/api/v1/audit/{id}"),
    ("get", "/api/v1/ai-keys/{id}"), ("delete", "/api/v1/ai-keys/{id}"), ("delete", "/api/v1/delegations/{id}"),
    ("get", "/api/v1/shared/messages/{id}"), ("post", "/api/v1/messages/{id}/archive"),
    ("post", "/api/v1/messages/{id}/delegate"),
])
def test_a_missing_object_answers_the_envelope_and_never_names_the_model(auth_client, method, template):
    kwargs = {"format": "json", "data": {}} if method == "post" else {}
    response = getattr(auth_client, method)(template.format(id=uuid.uuid4()), **kwargs)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


@pytest.mark.parametrize("path", ["/api/v1/messages/not-a-uuid", "/api/v1/ai-keys/1", "/api/v1/outbox/%27%20or%201=1",
                                  "/api/v1/connections/0/sync", "/api/v1/nothing/here", "/api/v2/messages"])
@pytest.mark.parametrize("debug", [False, True])
def test_a_malformed_id_is_a_json_404_also_with_debug_on(auth_client, settings, path, debug):
    # `make run` runs with DEBUG on, where Django's own 404 is an HTML page.
    settings.DEBUG = debug
    for method in ("get", "post", "delete"):
        response = getattr(auth_client, method)(path)
        assert response.status_code == 404, (method, path)
        assert response["Content-Type"] == "application/json"
        assert response.json() == NOT_FOUND


def _cursor(query: str) -> str:
    return base64.b64encode(query.encode()).decode()


LISTS = ["/api/v1/connections", "/api/v1/messages", "/api/v1/outbox", "/api/v1/ai-keys", "/api/v1/audit",
         "/api/v1/delegations", "/api/v1/shared/messages"]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("query", ["limit=null", "limit=true", "limit=AAA", "limit=0", "limit=-5", "limit=201",
                                   "limit=5.0", "limit=", "limit=%205", "cursor=%%%garbage", "cursor=",
                                   f"cursor={_cursor('o=0&r=0&p=not-a-date')}", f"cursor={'A' * 1001}"])
def test_every_list_answers_a_bad_page_parameter_with_400_invalid_query(auth_client, path, query):
    response = auth_client.get(f"{path}?{query}")
    assert response.status_code == 400, (query, response.content)
    error = response.json()["error"]
    assert error["code"] == "invalid_query"
    assert list(error["fields"]) == [query.split("=")[0]]
    assert "garbage" not in response.content.decode()  # nothing of the request is echoed


def test_a_page_size_in_range_pages_through_every_item(auth_client):
    for _ in range(3):
        audit_event(auth_client.user)
    seen, url = [], "/api/v1/audit?limit=2"
    while url:
        page = auth_client.get(url).json()
        assert len(page["results"]) <= 2
        seen += [event["id"] for event in page["results"]]
        url = page["next"]
    assert len(seen) == len(set(seen)) >= 3
    assert auth_client.get("/api/v1/audit?limit=200").status_code == 200


@pytest.mark.parametrize("query", ["unread=1", "unread=null", "unread=yes", "unread=", "connection=abc",
                                   "connection=123e4567e89b12d3a456426614174000", "label=" + "x" * 201,
                                   "folder=", "label="])
def test_bad_message_filters_are_400_invalid_query(auth_client, query):
    response = auth_client.get(f"/api/v1/messages?{query}")
    assert response.status_code == 400, query
    assert response.json()["error"]["code"] == "invalid_query"


@pytest.mark.parametrize("query", ["q=", "unread=true", "unread=false", "label=Work", "folder=INBOX",
                                   "connection=00000000-0000-4000-8000-000000000001", "q=x&unknown=ignored"])
def test_good_message_filters_are_200(auth_client, query):
    # `q=` is an empty search box: no text filter (docs/api.md).
    response = auth_client.get(f"/api/v1/messages?{query}")
    assert response.status_code == 200, (query, response.content)
    assert response.json()["results"] == []


def test_a_body_error_and_a_query_error_look_alike(auth_client):
    body = auth_client.post("/api/v1/ai-keys", {"provider": "nope"}, format="json").json()["error"]
    query = auth_client.get("/api/v1/messages?unread=nope").json()["error"]
    assert body["code"] == "invalid" and set(body["fields"]) >= {"provider", "key"}
    assert query == {"code": "invalid_query", "message": "A query parameter is not valid.",
                     "fields": {"unread": ["Must be true or false."]}}


def _mailbox_with_labels(owner):
    from django.utils import timezone

    from aiemaily.ownership.binding import owner_scope
    from mail.models import Connection, Folder, Message

    with owner_scope(owner):
        connection = Connection.objects.create(owner=owner, provider="imap", email="me@example.test", status="active")
        folder = Folder.objects.create(owner=owner, connection=connection, name="INBOX")
        for uid, labels in enumerate([["Work"], ["Work", "$Important"], ["Workshop"], [], ["work"]], start=1):
            Message.objects.create(owner=owner, connection=connection, folder=folder, uidvalidity=1, uid=uid,
                                   subject=f"m{uid}", labels=labels, date=timezone.now(), unread=uid % 2 == 0)
    return connection


def test_the_label_filter_finds_exactly_the_labelled_messages_on_either_database(auth_client):
    # `labels__contains` was PostgreSQL-only: on SQLite (`make run`) this answered a 500 (issue 21).
    _mailbox_with_labels(auth_client.user)

    def subjects(query):
        return sorted(m["subject"] for m in auth_client.get(f"/api/v1/messages?{query}").json()["results"])

    assert subjects("label=Work") == ["m1", "m2"]  # not "Workshop", not "work"
    assert subjects("label=%24Important") == ["m2"]
    assert subjects("label=Work&unread=true") == ["m2"]
    assert subjects("label=nothing") == []
    assert subjects("q=m3") == ["m3"]


def test_a_folder_name_is_matched_as_given_whitespace_included(auth_client):
    # The fuzzer's `folder=%09` (schema-valid: a non-empty string) was trimmed to "" and refused
    # as blank; a folder name is an exact match, so whitespace simply matches no folder.
    _mailbox_with_labels(auth_client.user)
    response = auth_client.get("/api/v1/messages?folder=%09")
    assert response.status_code == 200 and response.json()["results"] == []
    assert len(auth_client.get("/api/v1/messages?folder=INBOX").json()["results"]) == 5
    assert auth_client.get("/api/v1/messages?folder=").status_code == 400  # the schema says minLength 1


@pytest.mark.parametrize("value", ["%09", "%1E", "%20Work"])
def test_a_label_is_matched_as_given_whitespace_and_control_characters_included(auth_client, value):
    # The stateful fuzzer's `label=%1E` (schema-valid: one character) was trimmed to "" by str.strip()
    # and refused as blank (400); like a folder name, a label is an exact match that finds nothing.
    _mailbox_with_labels(auth_client.user)
    response = auth_client.get(f"/api/v1/messages?label={value}")
    assert response.status_code == 200 and response.json()["results"] == []
    assert auth_client.get("/api/v1/messages?label=").status_code == 400  # the schema says minLength 1


def test_a_number_where_the_schema_says_string_is_400_not_coerced(auth_client):
    response = auth_client.patch("/api/v1/ai-settings", {"model": 5}, format="json")
    assert response.status_code == 400 and response.json()["error"]["fields"] == {"model": ["Not a valid string."]}
    response = auth_client.post("/api/v1/ai-keys", {"provider": "openai", "key": 12345678901234567890}, format="json")
    assert response.status_code == 400 and "key" in response.json()["error"]["fields"]
    assert "12345678901234567890" not in response.content.decode()
    assert auth_client.get("/api/v1/ai-settings").json()["model"] != "5"


@pytest.mark.parametrize("debug", [False, True])
def test_a_delete_to_a_malformed_id_is_a_json_404_not_a_csrf_page(auth_client, settings, debug):
    # The fuzzer's DELETE /ai-keys/null,null got CSRF's HTML 403 from the catch-all route.
    settings.DEBUG = debug
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=auth_client._credentials["HTTP_AUTHORIZATION"])
    for method in ("delete", "post", "put", "patch"):
        response = getattr(client, method)("/api/v1/ai-keys/null%2Cnull")
        assert response.status_code == 404, (method, response.content[:200])
        assert response.json() == NOT_FOUND


def test_a_sync_of_a_mailbox_without_its_stored_password_is_400_not_500(auth_client):
    # A connection whose password is gone (storage failed, shredded): the service refused it with a
    # ValueError that became a 500; the API now checks what the service needs.
    connection = _mailbox_with_labels(auth_client.user)
    response = auth_client.post(f"/api/v1/connections/{connection.pk}/sync")
    assert response.status_code == 400 and list(response.json()["error"]["fields"]) == ["connection"]
    response = auth_client.post("/api/v1/outbox", {"connection": str(connection.pk), "to": ["a@example.test"],
                                                   "subject": "s", "body_text": "b"}, format="json")
    assert response.status_code == 400 and list(response.json()["error"]["fields"]) == ["connection"]


@pytest.mark.parametrize("path", ["/api/v1/messages/{id}/summary", "/api/v1/drafts/{id}"])
@pytest.mark.parametrize("query", ["wait=5.0", "wait=", "wait=11", "wait=-1", "wait=null"])
def test_the_wait_parameter_is_checked_like_every_query_parameter(auth_client, path, query):
    import uuid as uuid_module

    response = auth_client.get(path.format(id=uuid_module.uuid4()) + "?" + query)
    assert response.status_code == 400, (query, response.content)
    assert response.json()["error"]["code"] == "invalid_query" and list(response.json()["error"]["fields"]) == ["wait"]


def test_a_body_the_schema_allows_is_read_and_a_larger_one_is_413_with_the_envelope(auth_client):
    # 500,000 control characters escape to 3 MB of JSON: over Django's default 2.5 MB, which turned
    # a body the schema allows into an HTML 400 (found by the fuzzer).
    import json

    allowed = json.dumps({"connection": "00000000-0000-4000-8000-000000000001", "to": ["a@example.test"],
                          "subject": "s", "body_text": "\x1f" * 500_000})
    response = auth_client.post("/api/v1/outbox", allowed, content_type="application/json")
    assert response.status_code == 404 and response.json() == NOT_FOUND  # read, then: no such connection
    too_large = json.dumps({"provider": "openai", "key": "x" * (11 * 1024 * 1024)})
    for headers in ({}, {"HTTP_IDEMPOTENCY_KEY": "big-1"}):
        response = auth_client.post("/api/v1/ai-keys", too_large, content_type="application/json", **headers)
        assert response.status_code == 413, response.content[:300]
        assert response.json()["error"]["code"] == "request_too_large"


def test_a_stripped_field_is_checked_as_sent_so_the_schema_and_the_server_agree(auth_client):
    """DRF strips, then checks length and pattern; the schema checks the value as sent. A label
    " Work" fails the schema's pattern, and a 65-character label of 64 letters and a space fails its
    maxLength: the server refuses both (400) instead of rescuing them by stripping."""
    connection = _mailbox_with_labels(auth_client.user)
    from aiemaily.ownership.binding import owner_scope
    from mail.models import Message

    with owner_scope(auth_client.user):
        message = Message.objects.for_owner(auth_client.user).filter(connection=connection).first()
    for label in [" Work", "Work\t", "W" * 64 + " "]:
        response = auth_client.post(f"/api/v1/messages/{message.pk}/labels", {"add": [label]}, format="json")
        assert response.status_code == 400, (label, response.content)
        assert response.json()["error"]["code"] == "invalid"
        assert "add" in response.json()["error"]["fields"]


def test_stripping_still_applies_to_a_field_without_a_pattern_within_its_length():
    from rest_framework import serializers

    field = serializers.CharField(max_length=10)
    assert field.run_validation("  padded  ") == "padded"  # 10 characters as sent: within the schema
    with pytest.raises(serializers.ValidationError):
        field.run_validation("  padded   ")  # 11 as sent: the schema's maxLength refuses it
    with pytest.raises(serializers.ValidationError):
        field.run_validation("   ")  # blank once stripped; the schema's pattern \S says so
