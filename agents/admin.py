from typing import TYPE_CHECKING

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import Agent, ApiKey
from .services import api_key_create, api_key_revoke

if TYPE_CHECKING:
    # Generic in django-stubs only: Django's admin classes cannot be subscripted at runtime.
    _ApiKeyInlineBase = admin.TabularInline[ApiKey, Agent]
    _AgentAdminBase = admin.ModelAdmin[Agent]
    _ApiKeyAdminBase = admin.ModelAdmin[ApiKey]
else:
    _ApiKeyInlineBase = admin.TabularInline
    _AgentAdminBase = _ApiKeyAdminBase = admin.ModelAdmin


class ApiKeyInline(_ApiKeyInlineBase):
    model = ApiKey
    extra = 0
    fields = ("prefix", "label", "created_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "revoked_at")
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Agent)
class AgentAdmin(_AgentAdminBase):
    list_display = ("name", "description", "is_active", "created_at")
    search_fields = ("name", "description")
    inlines = [ApiKeyInline]
    actions = ["issue_key"]

    @admin.action(description="Issue a new API key (shown once)")
    def issue_key(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        for agent in queryset:
            _, raw_key = api_key_create(agent_name=agent.name, label="admin")
            self.message_user(
                request,
                f"New key for {agent.name} (copy it now, it is not shown again): {raw_key}",
                level=messages.WARNING,
            )


@admin.register(ApiKey)
class ApiKeyAdmin(_ApiKeyAdminBase):
    list_display = ("prefix", "agent", "scope", "label", "created_at", "revoked_at")
    list_filter = ("scope", "agent")
    search_fields = ("prefix", "agent__name", "label")
    readonly_fields = ("agent", "scope", "prefix", "created_at", "revoked_at")
    fields = ("agent", "scope", "label", "prefix", "created_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Keys are issued from the agent page or `manage.py create_api_key`, which show them once.
        return False

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            api_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")
