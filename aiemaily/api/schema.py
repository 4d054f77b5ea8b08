"""OpenAPI description of our authentication class (so the schema says: Bearer JWT)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class OwnerBoundJWTScheme(OpenApiAuthenticationExtension):
    target_class = "aiemaily.api.authentication.OwnerBoundJWTAuthentication"
    name = "jwtAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
