"""Small display filters for addresses in the mail list."""

from email.utils import parseaddr

from django import template

register = template.Library()


@register.filter
def sender_name(value: str) -> str:
    """'Dana Whitfield <dana@example>' -> 'Dana Whitfield'; a bare address stays as it is."""
    name, address = parseaddr(value or "")
    return name or address or value
