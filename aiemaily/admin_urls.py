"""URL map of the `admin` process (AIEMAILY_PROCESS=admin): the staff admin and nothing else.

It listens on its own non-public bind (Procfile `admin`), so no public request ever reaches the
process that holds the maintenance role.
"""

from django.contrib import admin
from django.urls import path

from aiemaily.ops import views as ops_views

urlpatterns = [
    path("healthz", ops_views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]

handler404 = "aiemaily.views.not_found"
handler500 = "aiemaily.views.server_error"
