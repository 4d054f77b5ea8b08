"""The reusable cross-owner check: another user's object answers exactly like a missing one.

    assert_cross_owner_404(stranger_client, "/api/v1/audit/{id}", obj.pk, snapshot=lambda: ...)

For every method, the stranger's response must equal the response for an id that does not exist
(same status and body); every method the endpoint supports (anything but 405) must be 404, and at
least one must be; the object must be unchanged afterwards (`snapshot` reads it as its owner).
"""

import uuid

METHODS = ("get", "put", "patch", "delete", "post")


def assert_cross_owner_404(client, url_template: str, object_id, *, snapshot, body=None):
    before = snapshot()
    supported = 0
    missing_url = url_template.format(id=uuid.uuid4())
    foreign_url = url_template.format(id=object_id)
    for method in METHODS:
        call = getattr(client, method)
        kwargs = {"format": "json"} if method in ("put", "patch", "post") else {}
        if kwargs:
            kwargs["data"] = body or {}
        foreign = call(foreign_url, **kwargs)
        missing = call(missing_url, **kwargs)
        assert foreign.status_code == missing.status_code, (method, foreign.status_code, missing.status_code)
        assert foreign.content == missing.content, method
        assert foreign.status_code in (404, 405), (method, foreign.status_code)
        supported += foreign.status_code == 404
    assert supported, "no method of the endpoint answered 404"
    assert snapshot() == before, "the stranger's requests changed the object"
