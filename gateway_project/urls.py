from django.contrib import admin
from django.urls import include, path

from . import views

admin.site.site_header = "llm-gateway"
admin.site.site_title = "llm-gateway admin"
admin.site.index_title = "Gateway administration"

urlpatterns = [
    path("", views.landing, name="landing"),
    path("readme", views.readme, name="readme"),
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),
    path("", include("routing.urls")),
    path("", include("reviews.urls")),
]
