"""Serializer helpers shared by the API, and the one rule every text field keeps: a string is a string."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator
from rest_framework import fields, serializers


def renamed_field(python_name: str, wire_name: str):
    """Class decorator: the serializer's field `python_name` is sent (and documented) as `wire_name`.

    For names Python cannot spell as a class attribute, such as `from`: the OpenAPI schema then
    shows the name the server really sends, which a to_representation() rename would hide.
    """

    def rename(serializer_class):
        fields = serializer_class._declared_fields
        serializer_class._declared_fields = {wire_name if name == python_name else name: field
                                             for name, field in fields.items()}
        return serializer_class

    return rename


def _strict_char_to_internal_value(self, data):
    # DRF turns a JSON number into text ("model": 5 becomes "5"); the schema says string, and a
    # client that sends a number has a bug it should hear about: 400 `invalid`, "Not a valid string."
    if not isinstance(data, str):
        # CharField's own text: a subclass's "invalid" (RegexField: "does not match") would mislead.
        raise serializers.ValidationError(fields.CharField.default_error_messages["invalid"], code="invalid")
    if self.trim_whitespace and data != data.strip():
        _check_as_sent(self, data)
    return _lenient_char_to_internal_value(self, data)


def _check_as_sent(field, data: str) -> None:
    # DRF strips first and checks the length and the pattern afterwards; the OpenAPI schema checks
    # the value as sent. A value the schema refuses (too long, or not matching the pattern once its
    # spaces count) is refused here too, rather than rescued by the stripping.
    if field.max_length is not None and len(data) > field.max_length:
        field.fail("max_length", max_length=field.max_length)
    for validator in field.validators:
        if isinstance(validator, RegexValidator):
            try:
                validator(data)
            except DjangoValidationError as error:
                raise serializers.ValidationError(error.messages, code="invalid") from None


_lenient_char_to_internal_value = fields.CharField.to_internal_value


def install_strict_strings() -> None:
    """Every CharField (and its subclasses: e-mail, regex, URL, SecretField) takes JSON strings only.

    One switch for the whole API, installed at start-up (aiemaily.apps), instead of a subclass per
    field that one forgotten field would escape. Query parameters are strings anyway.
    """
    fields.CharField.to_internal_value = _strict_char_to_internal_value

