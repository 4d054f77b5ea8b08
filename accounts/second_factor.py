"""Second factor: TOTP authenticator apps through django-otp (its TOTPDevice verifies codes with a
drift window, refuses a code used before, and slows repeated failures itself).

Staff must have one: the staff admin (aiemaily/admin_site.py) admits only sessions verified by a
confirmed device. Every user may turn it on from the security settings page; sign-in (page and API
token) then asks for a code.
"""

import base64

import segno
from django_otp import devices_for_user, match_token
from django_otp.plugins.otp_totp.models import TOTPDevice

DEVICE_NAME = "Authenticator app"


def required(user) -> bool:
    return any(True for _ in devices_for_user(user, confirmed=True))


def verify(user, code: str):
    """The confirmed device the code matches, or None."""
    return match_token(user, code)


def pending_device(user) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=False).first()


def enrol_start(*, user) -> TOTPDevice:
    """A fresh, unconfirmed device (replacing an earlier unconfirmed one); confirmed by a code."""
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    return TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)


def enrol_confirm(*, user, code: str) -> bool:
    device = pending_device(user)
    if device is None or not device.verify_token(code):
        return False
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    return True


def disable(*, user) -> None:
    TOTPDevice.objects.filter(user=user).delete()


def provisioning(device: TOTPDevice) -> dict:
    """What the enrolment page shows: the otpauth:// URL as an SVG QR code, and the secret typed by hand."""
    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    url = device.config_url
    qr = segno.make(url, error="m")
    return {"secret": secret, "qr_svg": qr.svg_data_uri(scale=4, border=2)}
