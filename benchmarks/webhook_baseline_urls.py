"""The URL map of bench_webhooks: the real one, plus the baseline: the same webhook paths under
`baseline/`, through the same middleware and decorations (POST only, CSRF-exempt), answering at once
without verification, ledger or hand-off."""

from django.http import HttpResponse
from django.urls import path

from aiemaily.urls import urlpatterns as real_urlpatterns
from aiemaily.webhooks.http import webhook_endpoint


@webhook_endpoint
def answer_only(request):
    request.body  # noqa: B018 - read the body, as every route does
    return HttpResponse(status=200)


urlpatterns = [path(f"baseline/webhooks/{name}", answer_only) for name in ("stripe", "gmail", "graph")]
urlpatterns += real_urlpatterns
