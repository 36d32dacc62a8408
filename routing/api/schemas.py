"""Request models of the API's JSON endpoints (pydantic: validated in microseconds).

They sit on the hot path, where DRF serializers cost more than the rest of the gateway's work per
request (they deep-copy their fields on every instantiation); see docs/adr/0005-async-request-path.md.
Every wrong field is reported, by name (``messages.1.content``), in one 400; the body rules that
come before (size, depth, NUL) are in gateway_project/json_body.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway_project.api_errors import invalid_fields
from gateway_project.outbound import (
    OutboundError,
    aresolve_target,
    outbound_target,
    outbound_url_error,
)
from providers.base import Message

from ..classify import valid_task_type

ROLE_ALIASES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

Temperature = Annotated[float | None, Field(default=None, ge=0, le=2)]
TopP = Annotated[float | None, Field(default=None, ge=0, le=1)]


class PartError(ValueError):
    """A wrong part of a field: ``path`` continues the field's name (``messages`` + ``1.content``)."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def message_text(content: Any, *, allow_null: bool = True) -> str:
    """OpenAI message content (a string or a list of text parts) as plain text."""
    if content is None:
        if not allow_null:
            raise PartError((), "must be a string or a list of text parts, not null")
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise PartError((index,), f"unsupported content part {kind!r}; send text")
            texts.append(part["text"])
        return "".join(texts)
    raise PartError((), "must be a string or a list of text parts")


def to_messages(items: list[Any], *, allow_null_content: bool = True) -> tuple[Message, ...]:
    if not items:
        raise ValueError("must be a non-empty list of messages")
    messages = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise PartError((index,), "must be an object with role and content")
        given = item.get("role")
        role = ROLE_ALIASES.get(given) if isinstance(given, str) else None
        if role is None:
            raise PartError((index, "role"), "must be one of system, developer, user, assistant")
        try:
            content = message_text(item.get("content"), allow_null=allow_null_content)
        except PartError as exc:
            raise PartError((index, "content", *exc.path), exc.message) from None
        messages.append(Message(role=role, content=content))
    return tuple(messages)


def check_max_tokens(value: int | None) -> int | None:
    limit = settings.GATEWAY["MAX_OUTPUT_TOKENS"]
    if value is not None and value > limit:
        raise ValueError(f"must be at most {limit}")
    return value


def check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    # The review queue reads the callback URL from the audit record's metadata: only the checked
    # callback_url field may put it there (docs/adr/0015-outbound-requests.md).
    if value is not None and "callback_url" in value:
        raise ValueError("must not hold callback_url: give it as the request's callback_url field")
    return value


class RequestModel(BaseModel):
    # Unknown fields are ignored (SDKs send many); numbers and strings are not coerced.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class CompletionRequest(RequestModel):
    """The native ``POST /v1/completion`` request: the seeds' contract plus options."""

    caller: Annotated[str, Field(max_length=100)] = ""
    task_type: Annotated[str, Field(max_length=100)] = ""
    input: str = ""
    language: Annotated[str, Field(max_length=16)] = ""
    messages: tuple[Message, ...] = ()
    model: Annotated[str, Field(max_length=200)] = ""
    tier: Literal["", "fast", "medium", "large", "external"] = ""
    max_tokens: Annotated[int | None, Field(ge=1)] = None
    temperature: Temperature = None
    top_p: TopP = None
    metadata: dict[str, Any] | None = None
    callback_url: Annotated[str, Field(max_length=2000)] = ""
    # The response cache (docs/adr/0010): keep this answer N seconds; share it with the project.
    cache_ttl: Annotated[int | None, Field(ge=0)] = None
    cache_scope: Literal["", "agent", "project"] = ""

    _check_max_tokens = field_validator("max_tokens")(check_max_tokens)
    _check_metadata = field_validator("metadata")(check_metadata)

    @field_validator("cache_ttl")
    @classmethod
    def _cache_ttl(cls, value: int | None) -> int | None:
        limit = settings.GATEWAY["CACHE_MAX_TTL_S"]
        if value is not None and value > limit:
            raise ValueError(f"must be at most {limit} seconds")
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str) -> str:
        # Everything but DNS; callback_url_resolves checks the addresses (ADR 0015).
        error = outbound_url_error(value, resolve=False) if value else None
        if error:
            raise ValueError(error.reason)
        return value

    @field_validator("messages", mode="plain")
    @classmethod
    def _messages(cls, value: Any) -> tuple[Message, ...]:
        if not isinstance(value, list):
            raise ValueError("must be a list of messages")
        # The native API has no tool calls, so a message without text is a mistake.
        return to_messages(value, allow_null_content=False)

    @field_validator("task_type")
    @classmethod
    def _task_type(cls, value: str) -> str:
        if value and not valid_task_type(value):
            raise ValueError("use lowercase letters, digits, '-' and '_' (at most 100 characters)")
        return value


class ChatCompletionRequest(RequestModel):
    """The OpenAI ``POST /v1/chat/completions`` request (the fields the gateway acts on)."""

    model: Annotated[str, Field(min_length=1, max_length=200)]
    messages: tuple[Message, ...]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: Annotated[int | None, Field(ge=1)] = None
    max_completion_tokens: Annotated[int | None, Field(ge=1)] = None
    temperature: Temperature = None
    top_p: TopP = None
    stop: str | list[str] | None = None
    n: Annotated[int | None, Field(ge=1, le=1)] = None
    response_format: dict[str, Any] | None = None
    user: Annotated[str, Field(max_length=200)] = ""
    metadata: dict[str, Any] | None = None
    tools: list[Any] | None = None

    _check_max_tokens = field_validator("max_tokens", "max_completion_tokens")(check_max_tokens)
    _check_metadata = field_validator("metadata")(check_metadata)

    @field_validator("messages", mode="plain")
    @classmethod
    def _messages(cls, value: Any) -> tuple[Message, ...]:
        if not isinstance(value, list):
            raise ValueError("must be a list of messages")
        return to_messages(value)

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("tool calling is not supported by this gateway yet")
        return value

    @field_validator("response_format")
    @classmethod
    def _response_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") not in {"text", "json_object", "json_schema"}:
            raise ValueError("type must be text, json_object or json_schema")
        return value

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ClassifyRequest(RequestModel):
    """``POST /v1/classify``: the input to classify, and optionally whose routing to show."""

    input: Annotated[str, Field(min_length=1)]
    caller: Annotated[str, Field(max_length=100)] = ""


M = TypeVar("M", bound=RequestModel)


def parse_request(model: type[M], data: dict[str, Any]) -> M:
    """Validate ``data`` or raise one 400 naming every wrong field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields: dict[str, str] = {}
        for error in exc.errors(include_url=False):
            loc = error["loc"]
            message = error["msg"].removeprefix("Value error, ")
            part = (error.get("ctx") or {}).get("error")
            if isinstance(part, PartError):
                loc, message = (*loc, *part.path), part.message
            name = ".".join(str(item) for item in loc) or "body"
            fields.setdefault(name, message)
        raise invalid_fields(fields) from None


async def callback_url_resolves(url: str) -> None:
    """The callback URL's host resolves, and only to addresses the gateway may call: else one 400
    naming ``callback_url``. Only requests with a callback URL wait for the lookup, off the event
    loop and briefly (docs/adr/0015-outbound-requests.md)."""
    try:
        await aresolve_target(outbound_target(url))
    except OutboundError as exc:
        raise invalid_fields({"callback_url": exc.reason}) from None
