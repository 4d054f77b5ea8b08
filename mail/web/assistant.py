"""Assistant pages: the summary on the message page, "Draft a reply", and the AI settings page (with
the owner's own BYOK keys: added here, sealed at once, shown only as a hint).

Model output reaches the page only through Django's autoescaping (`{{ text }}` inside a <pre>
block): it is text, never HTML, and it links to nothing and submits nothing.
"""

from django import forms
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_POST

from billing.selectors import limit_reason
from billing.services import PlanLimitReached
from mail.assistant import services
from mail.assistant.models import AiResult, AiSettings
from mail.assistant.selectors import ai_result_get, ai_settings_get
from mail.models import Connection
from mail.selectors import connection_list, message_get
from secrets_vault.ai_key_rules import ai_key_problems
from secrets_vault.crypto import SecretStr
from secrets_vault.models import AiKey
from secrets_vault.selectors import ai_key_list
from secrets_vault.services import ai_key_add, ai_key_delete


def result_view(result: AiResult | None) -> dict | None:
    if result is None:
        return None
    return {"result": result, "text": services.result_text(result=result),
            "offline": result.source == AiResult.Source.OFFLINE,
            "label": "Offline (no AI provider; nothing left Aiemaily)" if result.source == "offline"
            else f"By {result.provider} · {result.model} ({result.get_source_display()})"}


def summary_context(request, message) -> dict:
    """For the message page: the cached summary, or a pending one that the page polls, or why the
    plan does not allow a new one (with an upgrade link)."""
    context = {"ai_tones": AiResult.Tone.choices, "ai_settings": ai_settings_get(owner=request.user),
               "summary": None, "ai_locked": ""}
    try:
        context["summary"] = result_view(services.summary_request(owner=request.user, message=message))
    except PlanLimitReached as exc:
        context["ai_locked"] = str(exc.detail)
    return context


@login_required
@require_GET
def summary_status(request, message_id):
    message = message_get(owner=request.user, message_id=message_id)
    try:
        result = services.summary_request(owner=request.user, message=message)
    except PlanLimitReached:
        return JsonResponse({"status": "locked"}, status=403)
    return JsonResponse({"status": result.status})


@login_required
@require_POST
def draft_start(request, message_id):
    message = message_get(owner=request.user, message_id=message_id)
    tone = request.POST.get("tone") if request.POST.get("tone") in AiResult.Tone.values else "neutral"
    instruction = (request.POST.get("instruction") or "")[:1000]
    try:
        draft = services.draft_request(owner=request.user, message=message, instruction=instruction, tone=tone)
    except PlanLimitReached as exc:
        flash.error(request, str(exc.detail))
        return redirect("mailbox:message", message_id=message.pk)
    return redirect(f"{reverse('mailbox:compose')}?reply={message.pk}&draft={draft.pk}")


@login_required
@require_GET
def draft_status(request, draft_id):
    draft = ai_result_get(owner=request.user, result_id=draft_id, kind=AiResult.Kind.DRAFT)
    return JsonResponse({"status": draft.status})


def draft_for_compose(request, draft_id) -> dict | None:
    """Compose's view of a draft: it only pre-fills the form; sending is the user's Send."""
    draft = ai_result_get(owner=request.user, result_id=draft_id, kind=AiResult.Kind.DRAFT)
    return result_view(draft)


class AiSettingsForm(forms.Form):
    mode = forms.ChoiceField(choices=AiSettings.Mode.choices, widget=forms.RadioSelect)
    ai_key = forms.ModelChoiceField(queryset=AiKey.objects.none(), required=False, label="Your AI key")
    model = forms.RegexField(r"^[A-Za-z0-9._:/@-]{0,100}$", max_length=100, required=False,
                             help_text="e.g. gpt-4o-mini, claude-3-5-haiku-latest, llama3.1 (empty: the default)")
    third_party_enabled = forms.BooleanField(required=False, label="Allow third-party AI providers at all")
    redact_cards = forms.BooleanField(required=False, label="Remove card numbers")
    redact_ibans = forms.BooleanField(required=False, label="Remove IBANs")
    redact_codes = forms.BooleanField(required=False, label="Remove one-time codes")
    redact_passwords = forms.BooleanField(required=False, label="Remove lines that look like passwords")
    triage = forms.ModelMultipleChoiceField(queryset=Connection.objects.none(), required=False,
                                            widget=forms.CheckboxSelectMultiple,
                                            label="Triage new mail in these mailboxes")

    def __init__(self, *args, owner=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.owner = owner
        self.fields["ai_key"].queryset = AiKey.objects.for_owner(owner)
        self.fields["triage"].queryset = connection_list(owner=owner)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("mode") == AiSettings.Mode.BYOK and not cleaned.get("ai_key"):
            self.add_error("ai_key", "Choose one of your keys (add one under 'Your own keys' below, or through "
                                     "the API: POST /api/v1/ai-keys).")
        if cleaned.get("mode") == AiSettings.Mode.PLATFORM and cleaned.get("third_party_enabled"):
            locked = limit_reason(owner=self.owner, feature="platform_ai")
            if locked:
                self.add_error("mode", locked)
        return cleaned


class AiKeyAddForm(forms.Form):
    """A BYOK key: sealed to the vault inside this request, never shown again (only its last four)."""

    provider = forms.ChoiceField(choices=AiKey.Provider.choices)
    key = forms.CharField(max_length=400, label="Key", strip=True,
                          widget=forms.PasswordInput(attrs={"autocomplete": "off", "spellcheck": "false"}))
    base_url = forms.URLField(max_length=300, required=False, assume_scheme="https",
                              label="Server address (self-hosted models only)",
                              help_text="Leave empty for the provider's own service.")

    def clean(self):
        cleaned = super().clean()
        if "provider" in cleaned and "key" in cleaned:
            for field, problem in ai_key_problems(provider=cleaned["provider"], key=cleaned["key"],
                                                  base_url=cleaned.get("base_url") or "").items():
                self.add_error(field, problem)
        return cleaned


def _settings_page(request, form, key_form, status=200):
    return render(request, "mail/ai_settings.html", {
        "form": form, "key_form": key_form, "keys": ai_key_list(owner=request.user),
        "locked": limit_reason(owner=request.user, feature="platform_ai"),
    }, status=status)


def _settings_form(request, data=None):
    prefs = ai_settings_get(owner=request.user)
    initial = {name: getattr(prefs, name) for name in ("mode", "ai_key", "model", "third_party_enabled",
                                                      "redact_cards", "redact_ibans", "redact_codes",
                                                      "redact_passwords")}
    initial["triage"] = list(connection_list(owner=request.user).filter(ai_triage=True))
    return AiSettingsForm(data, owner=request.user, initial=initial)


@login_required
def ai_settings(request):
    form = _settings_form(request, request.POST or None)
    if request.method == "POST" and form.is_valid():
        values = dict(form.cleaned_data)
        triage = values.pop("triage")
        services.ai_settings_update(owner=request.user, **values)
        services.triage_mailboxes_set(owner=request.user, connection_ids=[c.pk for c in triage])
        flash.success(request, "AI settings saved.")
        return redirect("mailbox:ai_settings")
    return _settings_page(request, form, AiKeyAddForm(prefix="newkey"), status=400 if form.errors else 200)


@login_required
@require_POST
@sensitive_post_parameters("newkey-key")
def ai_key_add_page(request):
    key_form = AiKeyAddForm(request.POST, prefix="newkey")
    if not key_form.is_valid():
        return _settings_page(request, _settings_form(request), key_form, status=400)
    data = key_form.cleaned_data
    ai_key_add(owner=request.user, provider=data["provider"], key=SecretStr(data["key"]),
               base_url=data.get("base_url") or "")
    flash.success(request, "Your key is stored, sealed for the vault. Choose it below to use it.")
    return redirect("mailbox:ai_settings")


@login_required
@require_POST
def ai_key_delete_page(request, key_id):
    """Another user's key is 404; the key's ciphertext is deleted (the security log records it)."""
    ai_key = ai_key_list(owner=request.user).filter(pk=key_id).first()
    if ai_key is None:
        raise Http404("no such key")
    ai_key_delete(owner=request.user, ai_key=ai_key)
    flash.success(request, "The key is deleted.")
    return redirect("mailbox:ai_settings")
