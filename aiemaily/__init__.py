"""Aiemaily: the Django project package (settings, URLs, Celery app, shared base pieces)."""

from .celery import app as celery_app

__all__ = ["celery_app"]
