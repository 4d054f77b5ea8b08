"""WSGI entry point for gunicorn (the `web` process)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiemaily.settings")
application = get_wsgi_application()
