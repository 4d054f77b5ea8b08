"""The OpenAPI schema says what the server does, and docs/openapi.yaml is that schema.

When test_the_committed_schema_is_the_served_one fails, regenerate with `make openapi` and commit.
"""

import re
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from rest_framework.test import APIClient

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
MUTATING = ("post", "put", "patch", "delete")
ANONYMOUS = {"auth_token_create", "auth_token_refresh_create"}


@pytest.fixture(scope="module")
def schema():
    return yaml.safe_load(COMMITTED.read_text())


def _operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_the_committed_schema_is_the_generated_one_without_warnings(tmp_path):
    generated = tmp_path / "openapi.yaml"
    # --fail-on-warn: a field spectacular cannot type, or an enum name it has to guess, fails here.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(generated))
    assert generated.read_text() == COMMITTED.read_text(), "docs/openapi.yaml is stale: run `make openapi`"


@pytest.mark.django_db
def test_the_committed_schema_is_the_served_one():
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi")
    assert response.status_code == 200
    assert yaml.safe_load(response.content) == yaml.safe_load(COMMITTED.read_text())


def test_every_operation_documents_its_errors_with_the_envelope(schema):
    envelope = schema["components"]["schemas"]["Error"]
    assert envelope["required"] == ["error"]
    assert schema["components"]["schemas"]["ErrorDetail"]["required"] == ["code", "message"]
    for path, method, operation in _operations(schema):
        responses = operation["responses"]
        assert {"401", "429"} <= set(responses), (method, path)
        if any(p["in"] == "path" for p in operation.get("parameters", [])):
            assert "404" in responses, (method, path)
        if "requestBody" in operation or any(p["in"] == "query" for p in operation.get("parameters", [])):
            assert "400" in responses, (method, path)
        # 414 alone is the HTTP server's own HTML (a request line over 8 KiB, before Django), and
        # only a query can make a line that long.
        has_query = any(p["in"] == "query" for p in operation.get("parameters", []))
        assert ("414" in responses) == has_query, (method, path)
        if has_query:
            assert set(responses["414"]["content"]) == {"text/html"}, (method, path)
        for code, answer in responses.items():
            if code == "414":
                continue
            if code.startswith("4") and code not in ("429",) or code == "502":
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith(("/Error", "/AiFailedOutput")), (method, path, code)


def test_every_mutating_operation_takes_an_idempotency_key_and_documents_its_answers(schema):
    mutating = [(path, method, op) for path, method, op in _operations(schema)
                if method in MUTATING and op["operationId"] not in ANONYMOUS]
    assert len(mutating) > 10
    for path, method, operation in mutating:
        header = [p for p in operation["parameters"] if p["in"] == "header" and p["name"] == "Idempotency-Key"]
        assert header and header[0]["schema"]["maxLength"] == 255, (method, path)
        assert {"400", "409", "422"} <= set(operation["responses"]), (method, path)


def test_field_names_nullability_and_request_constraints_are_the_servers(schema):
    components = schema["components"]["schemas"]
    message = components["MessageOutput"]
    assert "from" in message["properties"] and "sender" not in message["properties"]
    assert "from" in message["required"]
    assert components["DelegationOutput"]["properties"]["revoked_at"]["nullable"] is True
    assert components["SummaryOutput"]["properties"]["completed_at"]["nullable"] is True
    assert components["AiKeyInputRequest"]["properties"]["key"]["minLength"] == 1
    assert components["ServerInputRequest"]["properties"]["host"]["minLength"] == 1
    label = components["LabelsInputRequest"]["properties"]["add"]
    assert label["maxItems"] == 20 and label["items"]["pattern"]
    account_delete = schema["paths"]["/api/v1/account"]["delete"]
    body = account_delete["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert components[body]["required"] == ["password"] and "403" in account_delete["responses"]


def test_pagination_parameters_are_typed(schema):
    listing = schema["paths"]["/api/v1/messages"]["get"]
    parameters = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert parameters["limit"] == {"type": "integer", "minimum": 1, "maximum": 200}
    assert parameters["cursor"]["type"] == "string" and parameters["cursor"]["maxLength"] == 200
    assert parameters["unread"]["type"] == "boolean"
    assert parameters["connection"]["format"] == "uuid"


def _one_of_lists(node):
    if isinstance(node, dict):
        if "oneOf" in node:
            yield node["oneOf"]
        for value in node.values():
            yield from _one_of_lists(value)
    elif isinstance(node, list):
        for value in node:
            yield from _one_of_lists(value)


def test_no_one_of_has_two_branches_that_both_accept_the_empty_string(schema):
    """`oneOf` means exactly one: a blank-able string whose pattern also matches "" makes "" invalid
    by the schema while the server accepts it (the fuzzer's ST201 on PATCH /ai-settings `model`)."""

    def accepts_empty(branch):
        # A format (uri, email, uuid…) never admits "", so such a branch and a maxLength-0 one are disjoint.
        return (branch.get("type") == "string" and branch.get("minLength", 0) == 0 and "format" not in branch
                and ("pattern" not in branch or re.search(branch["pattern"], "") is not None))

    found = [branches for branches in _one_of_lists(schema) if sum(map(accepts_empty, branches)) > 1]
    assert found == []


def test_a_field_the_server_strips_says_in_the_schema_that_whitespace_alone_is_not_a_value():
    """DRF strips a CharField's input before checking it, so "   " arrives blank and is refused: the
    schema must not call it valid (the fuzzer's ST202 on auth/token `email`). Fields taken as typed,
    blank-able ones and those with their own pattern are left as they are."""
    from rest_framework import serializers

    from aiemaily.api.schema import ApiAutoSchema

    mapper = ApiAutoSchema()
    stripped = mapper._map_serializer_field(serializers.CharField(max_length=10), "request")
    assert stripped["pattern"] == r"\S"
    assert mapper._map_serializer_field(serializers.EmailField(), "request")["pattern"] == r"\S"
    as_typed = mapper._map_serializer_field(serializers.CharField(trim_whitespace=False), "request")
    blank_ok = mapper._map_serializer_field(serializers.CharField(allow_blank=True), "request")
    answer = mapper._map_serializer_field(serializers.CharField(), "response")
    assert "pattern" not in as_typed and "pattern" not in blank_ok and "pattern" not in answer
    regex = serializers.RegexField(r"^\d{6}$")
    schema = mapper._map_serializer_field(regex, "request")
    mapper._insert_field_validators(regex, schema)
    assert schema["pattern"] == r"^\d{6}$"


def test_sign_in_fields_in_the_committed_schema(schema):
    token = schema["components"]["schemas"]["TokenObtainRequest"]["properties"]
    assert token["email"]["pattern"] == r"\S"  # stripped: "  " is not an address
    assert "pattern" not in token["password"]  # taken as typed: "  " is a (wrong) password, 401
    assert schema["components"]["schemas"]["ServerInputRequest"]["properties"]["host"]["pattern"] == r"\S"


REQUEST_LINE_LIMIT = 8190  # gunicorn's (and nginx's default 8k buffer): a longer line is a bare HTML 414


def _worst_case_bytes(parameter) -> int:
    """The longest this parameter can be in a request line, percent-encoded, while the schema calls it valid."""
    schema = parameter["schema"]
    if "enum" in schema:
        value = max(len(str(v)) for v in schema["enum"])
    elif schema.get("format") == "uuid":
        value = 36
    elif schema["type"] == "boolean":
        value = 5
    elif schema["type"] == "integer":
        assert "maximum" in schema, parameter["name"]
        value = len(str(schema["maximum"])) + ("minimum" in schema and schema["minimum"] < 0)
    else:
        assert schema["type"] == "string" and "maxLength" in schema, parameter["name"]
        # Only a pattern that is one positive class of ASCII characters bounds each to three bytes.
        ascii_only = re.fullmatch(r"\^\[[^\]\^\\]+\]\+\$", schema.get("pattern", "")) is not None \
            and schema["pattern"].isascii()
        # four bytes of UTF-8 per character, each sent as %XX; an ASCII pattern's symbols as %XX
        value = schema["maxLength"] * (3 if ascii_only else 12)
    return len(parameter["name"]) + 2 + value  # name, "=" and "&"


def test_every_valid_request_line_fits_within_the_servers_limit(schema):
    """A schema-valid query (the fuzzer's: a 500-character folder of four-byte characters) must never
    meet gunicorn's 414, which is neither documented nor the error envelope."""
    too_long = {}
    for path, method, operation in _operations(schema):
        parameters = operation.get("parameters", [])
        line = len(method) + len(" HTTP/1.1") + 2 + len(path)
        for parameter in parameters:
            if parameter["in"] == "path":
                line += 36 - len("{" + parameter["name"] + "}")
            elif parameter["in"] == "query":
                line += _worst_case_bytes(parameter)
        if line > REQUEST_LINE_LIMIT:
            too_long[f"{method.upper()} {path}"] = line
    assert too_long == {}


def test_no_stripped_field_needs_more_than_one_character(schema):
    """`\\S` says a stripped value is not blank; it cannot say "at least N characters once stripped".
    A stripped field with minLength > 1 would call "  ab " valid while the server refuses it: such a
    field must be taken as typed (trim_whitespace=False) or given a pattern of its own."""

    def walk(node):
        if isinstance(node, dict):
            if node.get("pattern") == r"\S":
                yield node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    stripped = list(walk(schema["components"]["schemas"]))
    assert len(stripped) >= 5
    assert [field for field in stripped if field.get("minLength", 0) > 1] == []
