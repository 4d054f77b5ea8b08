"""What the Google and Microsoft connect tests share: the local providers (tests/harness/oauth_servers.py)
wired into settings (the google and microsoft fixtures), the vault tasks web publishes kept instead of
sent, the steps of the consent flow as the browser takes them, and the refresh token the vault holds.
Import fixtures by name."""

from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from aiemaily.ownership.binding import owner_scope
from mail.models import Connection
from secrets_vault import vault_services
from tests.harness.https_server import session_server
from tests.harness.oauth_servers import FakeGoogle, FakeMicrosoft


def use_provider(server, settings, test_ca):
    """Points the OAuth settings at a freshly reset local provider and trusts the test CA for it."""
    server.reset()
    for name, value in server.settings.items():
        setattr(settings, name, value)
    settings.AIEMAILY_OAUTH_CA_BUNDLE = str(test_ca.ca_file)
    return server


google_server = session_server(FakeGoogle, "google_server")
microsoft_server = session_server(FakeMicrosoft, "microsoft_server")


@pytest.fixture
def google(google_server, settings, test_ca):
    return use_provider(google_server, settings, test_ca)


@pytest.fixture
def microsoft(microsoft_server, settings, test_ca):
    return use_provider(microsoft_server, settings, test_ca)


@pytest.fixture
def sent(monkeypatch):
    """Tasks published to the broker, kept here instead: (name, args)."""
    published = []
    monkeypatch.setattr("celery.app.task.Task.apply_async",
                        lambda self, args=None, kwargs=None, **options: published.append((self.name, list(args or []))))
    return published


@pytest.fixture
def browser(user):
    client = Client()
    client.force_login(user)
    return client


def url_query(url: str) -> dict:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def start(auth_client, provider: str, **body) -> dict:
    """POST /connections for an OAuth provider: the new connection with its authorize_url."""
    response = auth_client.post("/api/v1/connections", {"provider": provider, **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def callback(browser, location: str, capture, *, expected: str):
    """Follows the provider's redirect to our callback (which must be `expected`), on-commit work run."""
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == expected
    with capture(execute=True):
        return browser.get(f"{parts.path}?{parts.query}")


def stored_refresh_token(user, connection_id) -> tuple[Connection, str]:
    """The connection as it is now and the refresh token the vault holds for it."""
    with owner_scope(user):
        connection = Connection.objects.for_owner(user).get(pk=connection_id)
        stored = vault_services.secret_reveal(owner_id=user.pk, secret_id=connection.oauth_secret_id,
                                        purpose="oauth_refresh_token").reveal()
    return connection, stored
