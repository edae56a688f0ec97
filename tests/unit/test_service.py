"""Running as a service: sd_notify and the watchdog, structured logs without secrets,
metrics and health endpoints, the systemd unit, configuration."""

from __future__ import annotations

from pathlib import Path

from importd import config


def test_configuration_precedence_flags_env_file_defaults(tmp_path: Path) -> None:
    path = tmp_path / "importd.toml"
    path.write_text(
        '[importd]\nconcurrency = 3\npoll_interval = 7\nqueues = ["a", "b"]\nlog_level = "debug"\n'
    )
    env = {"IMPORTD_POLL_INTERVAL": "5", "IMPORTD_LOG_LEVEL": "warning"}
    settings = config.load({"log_level": "error"}, environ=env, config_path=path)
    assert settings.concurrency == 3  # file
    assert settings.poll_interval == 5.0  # environment beats file
    assert settings.log_level == "error"  # flag beats environment
    assert settings.queues == ("a", "b")
    assert settings.shutdown_grace == 30.0  # default


def test_secrets_come_from_files_and_credentials(tmp_path: Path) -> None:
    (tmp_path / "dsn").write_text("postgresql://app:from-creds@db/app\n")
    (tmp_path / "token").write_text("file-token-123\n")
    settings = config.load(
        {},
        environ={
            "CREDENTIALS_DIRECTORY": str(tmp_path),
            "IMPORTD_HTTP_TOKEN_FILE": str(tmp_path / "token"),
        },
    )
    assert settings.dsn == "postgresql://app:from-creds@db/app"
    assert settings.http_token == "file-token-123"
    shown = repr(settings)
    assert "from-creds" not in shown and "file-token-123" not in shown
