"""Security headers Django's own middleware does not set, on every response.

Placed directly below SecurityMiddleware and ABOVE WhiteNoise, so static files get them too
(WhiteNoise answers /static/ itself and the middleware below it never sees those responses).
Django's SecurityMiddleware already sends HSTS, nosniff, Referrer-Policy and COOP; this one adds:
- Permissions-Policy: every powerful feature off; Aiemaily needs none of them.
- Cross-Origin-Resource-Policy: same-origin, so other sites cannot embed our responses.
- Reporting-Endpoints: the group that the CSP `report-to` directive names.
- X-Frame-Options and a deny-all CSP for responses that bypassed XFrameOptionsMiddleware and
  django-csp (static files): every response says "do not frame me, run nothing".
"""

from django.conf import settings

# No header is overwritten: a view that set its own (the image proxy's CSP) keeps it.
FALLBACK_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def permissions_policy(features: dict[str, str]) -> str:
    return ", ".join(f"{feature}={allow}" for feature, allow in features.items())


class SecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.headers = {
            "Permissions-Policy": permissions_policy(settings.PERMISSIONS_POLICY),
            "Cross-Origin-Resource-Policy": settings.CROSS_ORIGIN_RESOURCE_POLICY,
            "Reporting-Endpoints": f'{settings.AIEMAILY_CSP_REPORT_GROUP}="{settings.AIEMAILY_CSP_REPORT_URI}"',
            "X-Frame-Options": settings.X_FRAME_OPTIONS,
            "Content-Security-Policy": FALLBACK_CSP,
        }

    def __call__(self, request):
        response = self.get_response(request)
        for name, value in self.headers.items():
            if name not in response:
                response[name] = value
        return response
