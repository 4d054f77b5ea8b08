"""The URL map of bench_webhooks: the real one, plus
- the baseline: the same webhook decorations (POST only, CSRF-exempt, the lean webhook path) under
  `webhooks/baseline/`, answering at once without verification, ledger or hand-off;
- the real webhook views again under `full-stack/webhooks/`, outside the lean path's prefix, so they
  run through every middleware a browser request does: how each delivery ran before the lean path
  (aiemaily/webhooks/middleware.py), measured in the same run."""

from django.http import HttpResponse
from django.urls import path

from aiemaily.urls import urlpatterns as real_urlpatterns
from aiemaily.webhooks.http import webhook_endpoint
from aiemaily.webhooks.stripe import stripe_webhook
from mail.webhooks.gmail import gmail_webhook
from mail.webhooks.graph import graph_webhook


@webhook_endpoint
def answer_only(request):
    request.body  # noqa: B018 - read the body, as every route does
    return HttpResponse(status=200)


urlpatterns = [path(f"{prefix}/{name}", answer_only) for name in ("stripe", "gmail", "graph")
               for prefix in ("webhooks/baseline", "full-stack/webhooks/baseline")]
urlpatterns += [path(f"full-stack/webhooks/{name}", view)
                for name, view in (("stripe", stripe_webhook), ("gmail", gmail_webhook), ("graph", graph_webhook))]
urlpatterns += real_urlpatterns
