from typing import TYPE_CHECKING, Any

from adminsortable2.admin import SortableAdminMixin
from django import forms
from django.contrib import admin
from django.http import HttpRequest

from .models import FallbackChainEntry, ModelDeployment, Provider, validate_upstream_url
from .selectors import provider_quota_usage, provider_runtime_status, upstream_limits_status
from .services import (
    config_changed_on_commit,
    config_object_delete,
    config_object_save,
    fallback_chain_reorder,
    provider_save,
)

if TYPE_CHECKING:
    # Generic in django-stubs only: Django's admin and form classes cannot be subscripted at
    # runtime. ConfigAdmin serves several models, hence Any.
    _ConfigAdminBase = admin.ModelAdmin[Any]
    _ProviderFormBase = forms.ModelForm[Provider]
    _ModelDeploymentInlineBase = admin.TabularInline[ModelDeployment, Provider]
else:
    _ConfigAdminBase = admin.ModelAdmin
    _ProviderFormBase = forms.ModelForm
    _ModelDeploymentInlineBase = admin.TabularInline


class ConfigAdmin(_ConfigAdminBase):
    """Saves through services so every process reloads its routing snapshot."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        config_object_save(obj=obj)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        config_object_delete(obj=obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for obj in queryset:
            config_object_delete(obj=obj)


class ProviderForm(_ProviderFormBase):
    base_url = forms.CharField(
        max_length=500,
        validators=[validate_upstream_url],
        help_text="For OpenAI-compatible providers include the version prefix, e.g. .../v1.",
    )
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: leave empty to keep the stored key. Stored encrypted.",
    )
    clear_api_key = forms.BooleanField(required=False, help_text="Remove the stored key.")

    class Meta:
        model = Provider
        fields = [
            "name", "kind", "base_url", "api_key", "clear_api_key", "api_key_env",
            "connect_timeout_s", "first_byte_timeout_s", "total_timeout_s",
            "max_concurrent_requests", "daily_request_quota", "daily_token_quota", "enabled",
        ]  # fmt: skip


class ModelDeploymentInline(_ModelDeploymentInlineBase):
    model = ModelDeployment
    extra = 0
    fields = (
        "public_name", "upstream_model", "tier", "input_cost_per_mtok", "output_cost_per_mtok",
        "context_window", "weight", "enabled",
    )  # fmt: skip


@admin.register(Provider)
class ProviderAdmin(ConfigAdmin):
    form = ProviderForm
    list_display = (
        "name", "kind", "base_url", "key_status", "runtime_status", "quota_today", "enabled",
    )  # fmt: skip
    list_filter = ("kind", "enabled")
    list_editable = ("enabled",)
    search_fields = ("name", "base_url")
    inlines = [ModelDeploymentInline]

    @admin.display(description="API key")
    def key_status(self, obj: Provider) -> str:
        if obj.has_stored_key:
            return "stored (encrypted)"
        if obj.api_key_env:
            return f"from ${obj.api_key_env}"
        return "none"

    @admin.display(description="status")
    def runtime_status(self, obj: Provider) -> str:
        return provider_runtime_status(provider_id=obj.id) if obj.enabled else "disabled"

    @admin.display(description="today (UTC) / daily quota")
    def quota_today(self, obj: Provider) -> str:
        return (
            provider_quota_usage(
                provider_id=obj.id,
                request_quota=obj.daily_request_quota,
                token_quota=obj.daily_token_quota,
            )
            or "-"
        )

    def save_model(self, request: HttpRequest, obj: Provider, form: Any, change: bool) -> None:
        provider_save(
            provider=obj,
            new_api_key=form.cleaned_data.get("api_key") or None,
            clear_api_key=bool(form.cleaned_data.get("clear_api_key")),
        )

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        super().save_formset(request, form, formset, change)
        config_changed_on_commit()


@admin.register(ModelDeployment)
class ModelDeploymentAdmin(ConfigAdmin):
    list_display = (
        "public_name", "provider", "upstream_model", "tier", "input_cost_per_mtok",
        "output_cost_per_mtok", "context_window", "weight", "upstream_limits", "enabled",
    )  # fmt: skip
    list_filter = ("tier", "provider", "enabled")
    list_editable = ("weight", "enabled")
    search_fields = ("public_name", "upstream_model")

    @admin.display(description="upstream limits (when low)")
    def upstream_limits(self, obj: ModelDeployment) -> str:
        status = upstream_limits_status(
            provider_id=obj.provider_id, upstream_model=obj.upstream_model
        )
        return status or "-"


# adminsortable2 ships no type information, so its mixin is Any to mypy.
@admin.register(FallbackChainEntry)
class FallbackChainAdmin(SortableAdminMixin, ConfigAdmin):  # type: ignore[misc]
    """The external chain; drag rows to reorder it."""

    list_display = ("position", "provider", "provider_enabled")

    @admin.display(boolean=True, description="enabled")
    def provider_enabled(self, obj: FallbackChainEntry) -> bool:
        return obj.provider.enabled

    def _update_order(self, updated_items: Any, extra_model_filters: Any) -> int:
        return fallback_chain_reorder(positions=[(int(pk), int(pos)) for pk, pos in updated_items])
