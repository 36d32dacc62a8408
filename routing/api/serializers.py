"""Request validation for the API (DRF serializers; pure CPU, safe to call from async views)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from providers.base import Message
from providers.models import Tier

from ..classify import valid_task_type

ROLE_ALIASES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def message_text(content: Any) -> str:
    """OpenAI message content (a string or a list of text parts) as plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise serializers.ValidationError(f"unsupported content part {kind!r}; send text")
            texts.append(part["text"])
        return "".join(texts)
    raise serializers.ValidationError("content must be a string or a list of text parts")


class MessagesField(serializers.Field):
    """A list of chat messages, normalised to :class:`providers.base.Message`."""

    default_error_messages = {
        "invalid": "must be a non-empty list of messages, each with a role and content"
    }

    def to_internal_value(self, data: Any) -> tuple[Message, ...]:
        if not isinstance(data, list) or not data:
            self.fail("invalid")
        messages = []
        for index, item in enumerate(data):
            if not isinstance(item, dict):
                raise serializers.ValidationError(f"message {index} must be an object")
            role = ROLE_ALIASES.get(item.get("role"))  # type: ignore[arg-type]
            if role is None:
                raise serializers.ValidationError(
                    f"message {index}: role must be one of system, developer, user, assistant"
                )
            try:
                text = message_text(item.get("content"))
            except serializers.ValidationError as exc:
                raise serializers.ValidationError(f"message {index}: {exc.detail[0]}") from None
            messages.append(Message(role=role, content=text))
        return tuple(messages)

    def to_representation(self, value: Any) -> Any:
        return [{"role": m.role, "content": m.content} for m in value]


def max_tokens_field() -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=settings.GATEWAY["MAX_OUTPUT_TOKENS"],
    )


class SamplingFields(serializers.Serializer):
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    metadata = serializers.DictField(required=False, allow_null=True)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["max_tokens"] = max_tokens_field()
        return fields


def validate_task_type_value(value: str) -> str:
    if value and not valid_task_type(value):
        raise serializers.ValidationError(
            "use lowercase letters, digits, '-' and '_' (at most 100 characters)"
        )
    return value


class CompletionRequestSerializer(SamplingFields):
    """The native ``POST /v1/completion`` request (the seeds' contract plus options)."""

    caller = serializers.CharField(required=False, allow_blank=True, max_length=100)
    task_type = serializers.CharField(
        required=False, allow_blank=True, max_length=100, validators=[validate_task_type_value]
    )
    input = serializers.CharField(required=False, allow_blank=False, trim_whitespace=False)
    language = serializers.CharField(required=False, allow_blank=True, max_length=16)
    messages = MessagesField(required=False)
    model = serializers.CharField(required=False, allow_blank=True, max_length=200)
    tier = serializers.ChoiceField(choices=Tier.values, required=False, allow_blank=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("input") and not attrs.get("messages"):
            raise serializers.ValidationError({"input": "give input or messages"})
        return attrs


class ChatCompletionRequestSerializer(SamplingFields):
    """The OpenAI ``POST /v1/chat/completions`` request (the fields the gateway acts on)."""

    model = serializers.CharField(max_length=200)
    messages = MessagesField()
    stream = serializers.BooleanField(required=False, default=False)
    stream_options = serializers.DictField(required=False, allow_null=True)
    max_completion_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    stop = serializers.JSONField(required=False, allow_null=True)
    n = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=1)
    response_format = serializers.DictField(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_blank=True, max_length=200)
    tools = serializers.JSONField(required=False, allow_null=True)

    def validate_max_completion_tokens(self, value: int | None) -> int | None:
        if value is not None and value > settings.GATEWAY["MAX_OUTPUT_TOKENS"]:
            raise serializers.ValidationError(
                f"Ensure this value is less than or equal to {settings.GATEWAY['MAX_OUTPUT_TOKENS']}."
            )
        return value

    def validate_stop(self, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) for v in value) and len(value) <= 4:
            return tuple(value)
        raise serializers.ValidationError("a string or a list of at most 4 strings")

    def validate_tools(self, value: Any) -> Any:
        if value:
            raise serializers.ValidationError("tool calling is not supported by this gateway yet")
        return value

    def validate_response_format(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") not in {"text", "json_object", "json_schema"}:
            raise serializers.ValidationError("type must be text, json_object or json_schema")
        return value


class ClassifyRequestSerializer(serializers.Serializer):
    input = serializers.CharField(trim_whitespace=False)
    caller = serializers.CharField(required=False, allow_blank=True, max_length=100)
