"""OwnedModel: every owned row carries an indexed owner, and queries must say whose rows they want.

The default manager refuses to evaluate a query that was not scoped with `.for_owner(user)`: an
unscoped query is a bug, and a loud error finds it where an empty list would hide it. The one way
around it, `unscoped(reason=...)`, is named, logged, and runs on the `maintenance` database alias.
"""

import logging
from uuid import UUID

from django.conf import settings
from django.db import models
from django.http import Http404
from django.shortcuts import get_object_or_404

audit_logger = logging.getLogger("aiemaily.audit.unscoped")


class UnscopedQueryError(RuntimeError):
    """An owned model was queried without .for_owner(user) or .unscoped(reason=...)."""


class MaintenanceNotHere(RuntimeError):
    """This process holds no maintenance (BYPASSRLS) database role: cross-owner work runs in
    worker-maintenance, and the staff admin in its own process (AIEMAILY_PROCESS=maintenance/admin)."""


def maintenance_alias() -> str:
    if "maintenance" not in settings.DATABASES:
        raise MaintenanceNotHere(f"AIEMAILY_PROCESS={settings.AIEMAILY_PROCESS} holds no maintenance role")
    return "maintenance"


class OwnedQuerySet(models.QuerySet):
    _owner_scoped = False

    def _clone(self):
        clone = super()._clone()
        clone._owner_scoped = self._owner_scoped
        return clone

    def _require_scope(self):
        if not self._owner_scoped:
            raise UnscopedQueryError(
                f"{self.model.__name__} query is not owner-scoped: "
                f"use {self.model.__name__}.objects.for_owner(user) or .unscoped(reason=...)"
            )

    def for_owner(self, owner):
        if owner is None or getattr(owner, "pk", owner) is None:
            raise UnscopedQueryError("for_owner() needs a saved user or a user id")
        clone = self.filter(owner=owner)
        clone._owner_scoped = True
        return clone

    def unscoped(self, *, reason: str):
        if not reason or not reason.strip():
            raise ValueError("unscoped() needs a reason, which is written to the audit log")
        alias = maintenance_alias()
        audit_logger.warning(
            "unscoped query on %s: %s", self.model._meta.label, reason, extra={"event": "unscoped_query"}
        )
        clone = self.using(alias)
        clone._owner_scoped = True
        return clone

    # Every way a queryset reaches the database goes through one of these.
    def _fetch_all(self):
        if self._result_cache is None:
            self._require_scope()
        super()._fetch_all()

    def iterator(self, *args, **kwargs):
        self._require_scope()
        return super().iterator(*args, **kwargs)

    def count(self):
        self._require_scope()
        return super().count()

    def exists(self):
        self._require_scope()
        return super().exists()

    def aggregate(self, *args, **kwargs):
        self._require_scope()
        return super().aggregate(*args, **kwargs)

    def update(self, **kwargs):
        self._require_scope()
        return super().update(**kwargs)

    def delete(self):
        self._require_scope()
        return super().delete()

    def in_bulk(self, *args, **kwargs):
        self._require_scope()
        return super().in_bulk(*args, **kwargs)

    def contains(self, obj):
        self._require_scope()
        return super().contains(obj)


class OwnedManager(models.Manager.from_queryset(OwnedQuerySet)):
    pass


class OwnedModel(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=True, editable=False
    )

    objects = OwnedManager()

    class Meta:
        abstract = True
        # Django follows relations (obj.owned_thing, cascades) through _base_manager, which does
        # not refuse unscoped queries: that path is covered by row-level security alone.


def owned_or_404(queryset, pk):
    """One owned row by primary key, or 404 — also for an id that is not a UUID at all (a form field
    or query value, where no URL converter checked it), which would otherwise be a 500."""
    try:
        UUID(str(pk))
    except ValueError:
        raise Http404("not found") from None
    return get_object_or_404(queryset, pk=pk)
