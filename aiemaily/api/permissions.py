"""Deny by default: a view that does not say who may use it is closed to everyone."""

from rest_framework.permissions import BasePermission


class DenyAll(BasePermission):
    def has_permission(self, request, view):
        return False
