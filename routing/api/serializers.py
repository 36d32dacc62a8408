"""DRF serializers of the control-plane endpoints (the completion endpoints use schemas.py)."""

from __future__ import annotations

from rest_framework import serializers


class ClassifyRequestSerializer(serializers.Serializer[dict[str, str]]):
    input = serializers.CharField(trim_whitespace=False)
    caller = serializers.CharField(required=False, allow_blank=True, max_length=100)
