"""The settings (DJANGO_SETTINGS_MODULE=aiemaily.settings), one module per concern. Every value comes
from the environment through the typed readers of aiemaily/env.py.

Defaults fail closed: DEBUG is off, there is no SECRET_KEY outside development, ALLOWED_HOSTS is
explicit. AIEMAILY_ENV selects the profile:
  development  `make run`: embedded defaults (SQLite, filesystem broker), keys generated under var/
  test         production security settings, but plain HTTP and un-hashed static files for pytest
  production   everything strict; missing configuration stops the process

The modules run in this order, each importing from the ones before what it depends on:
  core            profile, process, apps, middleware, templates, static files
  security        signing keys, hosts, authentication, cookies, CSP, CORS, outbound guard
  databases       the application and maintenance roles' databases, the cache
  api             DRF, JWTs, OpenAPI
  celery          broker, queues per trust zone, beat's schedule
  zones_and_keys  which process holds which key: KMS, vault and key-store databases, storage
  providers       OAuth clients, Gmail and Graph APIs
  webhooks        inbound webhook limits and secrets, push
  billing         Stripe
  assistant       the AI assistant
  logging         JSON logs with redaction
"""

# In the order above, so a misconfiguration is reported in the order it always was.
# isort: off
from aiemaily.settings.core import *  # noqa: F403
from aiemaily.settings.security import *  # noqa: F403
from aiemaily.settings.databases import *  # noqa: F403
from aiemaily.settings.api import *  # noqa: F403
from aiemaily.settings.celery import *  # noqa: F403
from aiemaily.settings.zones_and_keys import *  # noqa: F403
from aiemaily.settings.providers import *  # noqa: F403
from aiemaily.settings.webhooks import *  # noqa: F403
from aiemaily.settings.billing import *  # noqa: F403
from aiemaily.settings.assistant import *  # noqa: F403
from aiemaily.settings.logging import *  # noqa: F403
# isort: on
