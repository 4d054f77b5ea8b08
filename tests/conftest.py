"""Test harness: one PostgreSQL database per xdist worker, the three roles, migrations as the owner.

The suite connects as the application role (RLS applies), exactly as web and workers do; only
migrations run as the owning role. scripts/testenv.py starts the servers and sets the environment.
"""

import os
import uuid
from urllib.parse import urlsplit

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from psycopg import sql
from rest_framework.test import APIClient

from aiemaily.ownership.roles import ensure_roles
from tests.harness.factories import UserFactory

pytest_plugins = ["tests.harness.claims_plugin"]

OWNER_ROLE = "aiemaily_owner"
ROLE_LOCK = 7314159  # advisory lock id: workers create cluster-wide roles one at a time


def _admin_connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def pytest_collection_modifyitems(items):
    """Every test allowed the main database may also use the storage-key store (`keys`): mail
    bodies and metadata cannot be written or read without it, in the processes as in tests."""
    for item in items:
        marker = item.get_closest_marker("django_db")
        if marker is None:
            if not {"db", "transactional_db"} & set(getattr(item, "fixturenames", ())):
                continue
            kwargs = {"transaction": "transactional_db" in item.fixturenames}
        else:
            kwargs = dict(marker.kwargs)
        databases = kwargs.get("databases")
        if databases == "__all__":
            continue
        databases = list(databases or ["default"])
        if "default" in databases and "keys" not in databases:
            args = marker.args if marker is not None else ()
            item.add_marker(pytest.mark.django_db(*args, **{**kwargs, "databases": [*databases, "keys"]}),
                            append=False)


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker):
    if connections["default"].vendor == "sqlite":
        # AIEMAILY_TEST_DATABASE=sqlite (the sqlite_smoke run): Django's own in-memory test databases.
        from django.test.utils import setup_databases, teardown_databases

        with django_db_blocker.unblock():
            config = setup_databases(verbosity=0, interactive=False)
        yield
        with django_db_blocker.unblock():
            teardown_databases(config, verbosity=0)
        return
    admin_url = os.environ["TEST_DATABASE_URL"]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"aiemaily_test_{os.environ.get('AIEMAILY_TEST_RUN', 'x')}_{worker}"
    vault_name = f"{name}_vault"
    keys_name = f"{name}_keys"
    password = os.environ.get("AIEMAILY_TEST_ROLE_PASSWORD")
    # Set by scripts/testenv.py when it runs its own cluster, which requires it for the maintenance role.
    maintenance_password = os.environ.get("AIEMAILY_TEST_MAINTENANCE_PASSWORD")
    parts = urlsplit(admin_url)

    with _admin_connect(admin_url) as admin:
        admin.execute("SELECT pg_advisory_lock(%s)", [ROLE_LOCK])
        try:
            exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [OWNER_ROLE]).fetchone()
            admin.execute(
                sql.SQL("{} ROLE {} LOGIN NOSUPERUSER CREATEDB NOBYPASSRLS").format(
                    sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(OWNER_ROLE)
                )
            )
            with admin.cursor() as cursor:
                ensure_roles(
                    cursor,
                    owner_role=OWNER_ROLE,
                    app_role=settings.AIEMAILY_DB_APP_ROLE,
                    maintenance_role=settings.AIEMAILY_DB_MAINTENANCE_ROLE,
                    password=password,
                    maintenance_password=maintenance_password,
                )
        finally:
            admin.execute("SELECT pg_advisory_unlock(%s)", [ROLE_LOCK])
        for db_name in (name, vault_name, keys_name):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name)))
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db_name), sql.Identifier(OWNER_ROLE))
            )

    for alias, role, db_name, secret in (
        ("default", settings.AIEMAILY_DB_APP_ROLE, name, password),
        ("maintenance", settings.AIEMAILY_DB_MAINTENANCE_ROLE, name, maintenance_password),
        ("vault", settings.AIEMAILY_DB_APP_ROLE, vault_name, password),
        ("keys", settings.AIEMAILY_DB_APP_ROLE, keys_name, password),
    ):
        connection = connections[alias]
        connection.close()
        connection.settings_dict.update(
            NAME=db_name, USER=role, PASSWORD=secret or "", HOST=parts.hostname, PORT=str(parts.port or 5432)
        )

    with django_db_blocker.unblock():
        for alias in ("default", "vault", "keys"):
            connection = connections[alias]
            connection.settings_dict["USER"] = OWNER_ROLE
            try:
                call_command("migrate", database=alias, verbosity=0, interactive=False)
                with connection.cursor() as cursor:
                    # Test-only: pytest-django empties tables between transactional tests with TRUNCATE.
                    cursor.execute(
                        sql.SQL("GRANT TRUNCATE ON ALL TABLES IN SCHEMA public TO {}").format(
                            sql.Identifier(settings.AIEMAILY_DB_APP_ROLE)
                        ).as_string(cursor.connection)
                    )
            finally:
                connection.close()
                connection.settings_dict["USER"] = settings.AIEMAILY_DB_APP_ROLE

    yield

    for alias in connections:
        connections[alias].close()
    with _admin_connect(admin_url) as admin:
        for db_name in (name, vault_name, keys_name):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name)))


@pytest.fixture(scope="session", autouse=True)
def _own_broker_database():
    """Each xdist worker gets its own Redis database as broker, so real Celery workers started by
    one test process never take tasks meant for another's test database."""
    from aiemaily.celery import app as celery_app

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw-1")
    index = 3 + int(worker[2:]) if worker[2:].lstrip("-").isdigit() and not worker.endswith("-1") else 15
    base = settings.CELERY_BROKER_URL.rsplit("/", 1)[0]
    if settings.CELERY_BROKER_URL.startswith("redis://"):
        settings.CELERY_BROKER_URL = f"{base}/{index}"
        celery_app.conf.broker_url = settings.CELERY_BROKER_URL
        celery_app.conf.broker_write_url = settings.CELERY_BROKER_URL
        celery_app.conf.broker_read_url = settings.CELERY_BROKER_URL
    yield


@pytest.fixture(autouse=True)
def _empty_broker():
    """Each test starts with an empty broker: a task an earlier test queued (for a user its teardown
    since deleted) must never reach a real worker this test starts. The webhook routes' relay publishes
    what an earlier test left with it first, so it lands here, not in this test's capture."""
    from aiemaily.webhooks import handoff

    handoff.flush()
    if settings.CELERY_BROKER_URL.startswith("redis://"):
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        try:
            client.flushdb()
        finally:
            client.close()
    yield


@pytest.fixture
def api_client():
    return APIClient()


# These need database access from the test's own django_db mark (so a transactional test's users are
# committed and visible to other threads and processes), not from a fixture of their own.
@pytest.fixture
def user():
    return UserFactory()


@pytest.fixture
def stranger():
    return UserFactory()


def issue_tokens(client, user, password="correct horse battery staple"):
    response = client.post("/api/v1/auth/token", {"email": user.email, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def auth_client(user):
    client = APIClient()
    tokens = issue_tokens(client, user)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    client.user = user
    return client


@pytest.fixture
def unique_email():
    return f"user-{uuid.uuid4().hex[:12]}@example.test"


@pytest.fixture(scope="session")
def test_ca():
    import shutil
    import tempfile
    from pathlib import Path

    from tests.harness.mailservers import TestCA

    root = Path(tempfile.mkdtemp(prefix="aiemaily-ca-"))
    root.chmod(0o755)  # Dovecot reads the key through `<file` as root, workers as any user
    yield TestCA(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory, test_ca):
    import shutil
    import tempfile
    from pathlib import Path

    from tests.harness.mailservers import Dovecot

    # Not under pytest's tmp folder: that is 0700 and Dovecot's unprivileged processes must enter.
    root = Path(tempfile.mkdtemp(prefix="aiemaily-dovecot-"))
    server = Dovecot(root, test_ca)
    yield server
    server.stop()
    if not os.environ.get("AIEMAILY_KEEP_DOVECOT"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def smtp_server(test_ca):
    from tests.harness.mailservers import SmtpServer

    server = SmtpServer(test_ca)
    yield server
    server.stop()


@pytest.fixture
def mail_settings(settings, test_ca):
    """Trust the test CA and allow the loopback mail servers, as `make run` does for local mailboxes."""
    settings.AIEMAILY_MAIL_CA_BUNDLE = str(test_ca.ca_file)
    settings.AIEMAILY_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1", "localhost"]
    return settings


@pytest.fixture
def mailbox(dovecot, smtp_server):
    """A fresh IMAP user and the same login on the SMTP server."""
    user, password = dovecot.add_user()
    smtp_server.add_user(user, password)
    return user, password
