"""Each request runs in one transaction whose first statement binds the signed-in user as owner.

Session users are bound here; API users are bound by the DRF authentication class once their JWT
is verified, inside this same transaction. An anonymous request is bound to nobody, so RLS shows it
no owned rows at all.
"""

from django.db import connections, transaction

from aiemaily.ownership.binding import bind_owner


class OwnerScopeMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if connections["default"].vendor != "postgresql":
            return self.get_response(request)
        with transaction.atomic():
            user = getattr(request, "user", None)
            bind_owner(user if user is not None and user.is_authenticated else None)
            response = self.get_response(request)
            if response.status_code >= 500:
                # The handler already turned the exception into a response; nothing it wrote stays.
                transaction.set_rollback(True)
            elif not connections["default"].needs_rollback:
                # Unbind before leaving: when this block is a savepoint inside an outer transaction
                # (tests; a server embedding the app), the binding must not outlive the request.
                bind_owner(None)
            return response
