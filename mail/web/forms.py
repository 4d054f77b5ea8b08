"""The IMAP/SMTP connection form. Validation is the API's (mail/api/serializers.py): one set of rules."""

from django import forms

from mail.api.serializers import ConnectionInput, ServerInput
from mail.models import Connection

SECURITY = Connection.Security.choices


class ImapConnectionForm(forms.Form):
    email = forms.EmailField(max_length=254, label="E-mail address")
    imap_host = forms.CharField(max_length=253, label="IMAP server", initial="")
    imap_port = forms.IntegerField(min_value=1, max_value=65535, initial=993, label="IMAP port")
    imap_security = forms.ChoiceField(choices=SECURITY, initial="tls", label="IMAP security")
    imap_username = forms.CharField(max_length=254, label="IMAP user name", required=False,
                                    help_text="Usually your e-mail address (the default when left empty).")
    imap_password = forms.CharField(max_length=1024, strip=False, label="Password",
                                    widget=forms.PasswordInput(attrs={"autocomplete": "off"}))
    smtp_host = forms.CharField(max_length=253, label="SMTP server")
    smtp_port = forms.IntegerField(min_value=1, max_value=65535, initial=465, label="SMTP port")
    smtp_security = forms.ChoiceField(choices=SECURITY, initial="tls", label="SMTP security")
    smtp_username = forms.CharField(max_length=254, label="SMTP user name", required=False,
                                    help_text="The IMAP user name when left empty.")
    smtp_same_password = forms.BooleanField(required=False, initial=True,
                                            label="SMTP uses the same password as IMAP")
    smtp_password = forms.CharField(max_length=1024, strip=False, required=False, label="SMTP password",
                                    widget=forms.PasswordInput(attrs={"autocomplete": "off"}))

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        # Most servers share one account for both protocols: empty user names default to the address.
        cleaned["imap_username"] = cleaned.get("imap_username") or cleaned["email"]
        cleaned["smtp_username"] = cleaned.get("smtp_username") or cleaned["imap_username"]
        if cleaned.get("smtp_same_password"):
            cleaned["smtp_password"] = cleaned["imap_password"]
        elif not cleaned.get("smtp_password"):
            self.add_error("smtp_password", "Enter the SMTP password, or tick \"same password\".")
            return cleaned
        payload = {"provider": "imap", "email": cleaned["email"]}
        for prefix in ("imap", "smtp"):
            payload[prefix] = {key: cleaned[f"{prefix}_{key}"] for key in ServerInput().fields}
        serializer = ConnectionInput(data=payload)
        if not serializer.is_valid():
            self._add_serializer_errors(serializer.errors)
            return cleaned
        cleaned["validated"] = serializer.validated_data
        return cleaned

    def _add_serializer_errors(self, errors, prefix=""):
        for name, messages in errors.items():
            if isinstance(messages, dict):
                self._add_serializer_errors(messages, f"{name}_")
                continue
            field = f"{prefix}{name}" if f"{prefix}{name}" in self.fields else None
            for message in messages:
                self.add_error(field, str(message))


class PasswordUpdateForm(forms.Form):
    imap_password = forms.CharField(max_length=1024, strip=False, required=False, label="New IMAP password",
                                    widget=forms.PasswordInput(attrs={"autocomplete": "off"}))
    smtp_password = forms.CharField(max_length=1024, strip=False, required=False, label="New SMTP password",
                                    widget=forms.PasswordInput(attrs={"autocomplete": "off"}))

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("imap_password") and not cleaned.get("smtp_password"):
            raise forms.ValidationError("Enter at least one new password.")
        return cleaned
