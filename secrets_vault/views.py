"""Settings pages of the vault: the audit trail."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from secrets_vault.selectors import audit_list


@login_required
def audit_page(request):
    events = list(audit_list(owner=request.user)[:200])
    return render(request, "secrets_vault/audit.html", {"events": events})
