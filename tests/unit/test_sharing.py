"""Fair sharing: queues with slots of their own, tenant-fair claims and the per-tenant
cap, rate limits shared by daemons, wake-up storms. Real processes, real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from importd.lanes import QueueSlots, RateLimit, plan_lanes

# -- the settings' grammar ----------------------------------------------------------------


def test_queue_and_rate_limit_specs_parse_or_say_why() -> None:
    assert QueueSlots.parse("imports=6") == QueueSlots("imports", 6)
    assert QueueSlots.parse("webhooks") == QueueSlots("webhooks", None)
    assert RateLimit.parse("webhooks=10/s") == RateLimit("queue", "webhooks", 10.0, 1)
    assert RateLimit.parse("kind:http=600/min:5") == RateLimit("kind", "http", 10.0, 5)
    assert RateLimit.parse("x=36/h").interval == pytest.approx(100.0)
    for bad in ("imports=0", "imp orts=2", "imports=two", "imports=\u00b2"):
        with pytest.raises(ValueError, match="queue"):
            QueueSlots.parse(bad)
    for bad in ("webhooks=10", "webhooks=0/s", "webhooks=10/fortnight", "=10/s"):
        with pytest.raises(ValueError):
            RateLimit.parse(bad)


def test_a_job_is_governed_by_its_queue_limit_else_its_kind_limit() -> None:
    limits = [RateLimit.parse("webhooks=10/s"), RateLimit.parse("kind:http=5/s")]
    main, queue_lane, kind_lane = plan_lanes(None, None, limits)
    assert (main.queues, main.skip_queues, main.skip_kinds) == (None, ("webhooks",), ("http",))
    assert (queue_lane.queues, queue_lane.kinds, queue_lane.rate) == (
        ("webhooks",),
        None,
        limits[0],
    )
    assert (kind_lane.kinds, kind_lane.skip_queues, kind_lane.rate) == (
        ("http",),
        ("webhooks",),
        limits[1],
    )
    # a worker serving only the limited queue has no main lane
    (only,) = plan_lanes(["webhooks"], None, limits)
    assert only.rate == limits[0] and only.queues == ("webhooks",)


def test_sharing_settings_from_the_config_file_and_environment(tmp_path: Path) -> None:
    from importd import config  # noqa: PLC0415

    path = tmp_path / "importd.toml"
    path.write_text(
        'queues = ["imports=6", "webhooks=2"]\nfair = false\n'
        'tenant_concurrency = 3\nrate_limits = ["webhooks=10/s", '
        '"kind:http=600/min:5"]\n'
    )
    settings = config.load({}, environ={}, config_path=path)
    assert settings.queue_slots == (QueueSlots("imports", 6), QueueSlots("webhooks", 2))
    assert settings.total_slots == 8 and settings.effective_pool_size == 18
    assert settings.fair is False and settings.tenant_concurrency == 3
    assert [r.key for r in settings.parsed_rate_limits] == ["queue:webhooks", "kind:http"]
    env = {"IMPORTD_QUEUES": "a,b=3", "IMPORTD_CONCURRENCY": "4", "IMPORTD_RATE_LIMITS": "a=1/s"}
    settings = config.load({}, environ=env, config_path=path)
    assert settings.queue_slots == (QueueSlots("a"), QueueSlots("b", 3))
    assert settings.total_slots == 7  # a takes --concurrency
    with pytest.raises(config.ConfigError, match="IMPORTD_TENANT_CONCURRENCY"):
        config.load({}, environ={"IMPORTD_TENANT_CONCURRENCY": "-1"})
