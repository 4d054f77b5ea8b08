"""The public site: landing, features, pricing, FAQ and the "Privacy & security" page.

Server-rendered under the same CSP as every page. The security page shows each promise of
`aiemaily/claims.py` with the evidence of the last `make security-report` run, read from the
committed docs/security-claims.json (built into the site, never fetched from elsewhere).
"""

from django.shortcuts import render
from django.views.decorators.http import require_GET

from aiemaily.claims import CLAIMS, claims_evidence


@require_GET
def features(request):
    return render(request, "public/features.html")


@require_GET
def faq(request):
    return render(request, "public/faq.html")


@require_GET
def security(request):
    evidence = claims_evidence()
    per_claim = evidence.get("claims", {})
    promises = []
    for claim in CLAIMS:
        entry = per_claim.get(claim.id, {})
        status = "planned" if claim.planned else entry.get("status", "unproven")
        promises.append({"claim": claim, "status": status, "passed": entry.get("passed", 0)})
    return render(request, "public/security.html", {
        "promises": promises,
        "run_at": evidence.get("run_at"),
        "commit": evidence.get("commit"),
        "header_score": evidence.get("extra", {}).get("observatory_score"),
    })
