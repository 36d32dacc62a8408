"""Routing config is cached per process and reloaded when it changes."""

from __future__ import annotations

import httpx
import pytest
from factories import new_api_key, sim_setup

from routing.config import current_snapshot, routing_config_changed, snapshot_cache


@pytest.fixture
def client(gateway, simulator):
    sim_setup(simulator.url)
    key = new_api_key()
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as c:
        yield c


def test_admin_edit_reaches_the_running_gateway(client, admin_client):
    """Disabling a model in the admin takes effect on the next request, without a restart."""
    from providers.models import ModelDeployment

    assert client.post("/v1/completion", json={"input": "x"}).json()["model"] == "sim-fast"
    fast = ModelDeployment.objects.get(public_name="sim-fast")
    response = admin_client.post(
        "/admin/providers/modeldeployment/",
        {
            "form-TOTAL_FORMS": "4", "form-INITIAL_FORMS": "4", "_save": "Save",
            **{
                f"form-{i}-{field}": value
                for i, d in enumerate(ModelDeployment.objects.order_by("tier", "public_name"))
                for field, value in (
                    ("id", d.id), ("weight", d.weight), ("enabled", "on" if d.id != fast.id else ""),
                )
                if value != ""
            },
        },
    )  # fmt: skip
    assert response.status_code == 302
    fast.refresh_from_db()
    assert not fast.enabled
    assert client.post("/v1/completion", json={"input": "x"}).json()["model"] == "sim-medium"


@pytest.mark.django_db(transaction=True)
async def test_snapshot_is_reused_without_queries(settings, monkeypatch):
    """Once loaded, the snapshot serves requests without reading the database again."""
    from routing import config

    builds = []
    real_build = config.build_snapshot

    def counting_build(v):
        builds.append(v)
        return real_build(v)

    monkeypatch.setattr(config, "build_snapshot", counting_build)
    settings.GATEWAY = {**settings.GATEWAY, "CONFIG_CHECK_INTERVAL_S": 60}
    snapshot_cache.clear()
    first = await current_snapshot()
    for _ in range(10):
        assert await current_snapshot() is first
    assert len(builds) == 1


@pytest.mark.django_db(transaction=True)
async def test_version_bump_reloads(settings):
    """A config change bumps the shared version and the next lookup rebuilds the snapshot."""
    from asgiref.sync import sync_to_async

    settings.GATEWAY = {**settings.GATEWAY, "CONFIG_CHECK_INTERVAL_S": 0}
    snapshot_cache.clear()
    first = await current_snapshot()
    await sync_to_async(routing_config_changed)()
    second = await current_snapshot()
    assert second is not first and second.version != first.version
