from django.urls import path

from .api import health, views

urlpatterns = [
    path("v1/completion", views.completion_create, name="completion-create"),
    path("v1/completion/<str:request_id>", views.completion_detail, name="completion-detail"),
    path("v1/chat/completions", views.chat_completions, name="chat-completions"),
    path("v1/models", views.models_list, name="models-list"),
    path("v1/classify", views.classify_input, name="classify"),
    path("health", health.health, name="health"),
    path("health/ready", health.ready, name="health-ready"),
]
