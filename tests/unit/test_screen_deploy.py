"""The schedulers' files run the real command with real settings; the CLI reads LAWCLF_SCREEN_*."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from lawclf.config import ConfigError, ScreenConfig, env_values
from lawclf.screen import ENV_PREFIX, cli

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
FIELDS = {f.name for f in dataclasses.fields(ScreenConfig)}


def _screen_envs(text: str) -> set[str]:
    return set(re.findall(rf"{ENV_PREFIX}([A-Z_]+)", text))


def test_env_values_parse_types_and_name_bad_ones():
    got = env_values(ScreenConfig, ENV_PREFIX, {"LAWCLF_SCREEN_MAX_PAGES": "7", "LAWCLF_SCREEN_PROGRESS": "true",
                                                "LAWCLF_SCREEN_DB_URL": "sqlite:///x.db", "OTHER": "1"})
    assert got == {"max_pages": 7, "progress": True, "db_url": "sqlite:///x.db"}
    with pytest.raises(ConfigError, match="LAWCLF_SCREEN_MAX_PAGES"):
        env_values(ScreenConfig, ENV_PREFIX, {"LAWCLF_SCREEN_MAX_PAGES": "many"})


def test_the_cli_reads_the_environment_and_flags_win(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAWCLF_SCREEN_DB_URL", f"sqlite:///{tmp_path}/env.db")
    assert cli(["status"]) == 0
    assert (tmp_path / "env.db").exists()
    assert cli(["status", "--db-url", f"sqlite:///{tmp_path}/flag.db"]) == 0
    assert (tmp_path / "flag.db").exists()
    assert '"passes": []' in capsys.readouterr().out


def test_compose_services():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    screen, review = compose["services"]["screen"], compose["services"]["review"]
    assert screen["command"] == ["screen", "run"] and "restart" not in screen  # one pass per run, no loop
    assert screen["profiles"] == review["profiles"] == ["screen"]  # `docker compose up` starts only the API
    assert review["ports"] == ["127.0.0.1:8010:8010"]
    assert "LAWCLF_REVIEW_TOKEN" in review["environment"]
    assert review["entrypoint"][-1] == "lawclf.screen.review:create_review_app()"
    assert (DEPLOY / screen["build"]["dockerfile"].removeprefix("deploy/")).exists()


def test_the_gunicorn_app_reads_the_environment_and_needs_a_token_off_loopback(tmp_path, monkeypatch):
    from lawclf.screen.review import create_review_app

    monkeypatch.setenv("LAWCLF_SCREEN_DB_URL", f"sqlite:///{tmp_path}/r.db")
    monkeypatch.setenv("LAWCLF_SCREEN_REVIEW_HOST", "0.0.0.0")
    monkeypatch.delenv("LAWCLF_REVIEW_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="review_token"):
        create_review_app()
    monkeypatch.setenv("LAWCLF_REVIEW_TOKEN", "t")
    client = create_review_app().test_client()
    assert client.get("/api/posts").status_code == 401
    assert client.get("/api/posts", headers={"Authorization": "Bearer t"}).get_json()["posts"] == []
    assert (tmp_path / "r.db").exists()


def test_dockerfile_systemd_and_cron_use_real_settings():
    dockerfile = (DEPLOY / "screen.Dockerfile").read_text(encoding="utf-8")
    assert {n.lower() for n in _screen_envs(dockerfile)} <= FIELDS
    assert "requirements-screen.txt" in dockerfile and (DEPLOY / "requirements-screen.txt").exists()
    service = (DEPLOY / "screen" / "lawclf-screen.service").read_text(encoding="utf-8")
    assert "Type=oneshot" in service
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert shlex.split(exec_start.partition("=")[2])[1:] == ["screen", "run"]
    timer = (DEPLOY / "screen" / "lawclf-screen.timer").read_text(encoding="utf-8")
    assert "OnCalendar=" in timer and "Persistent=true" in timer
    cron = [line for line in (DEPLOY / "screen" / "crontab").read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")]
    (line,) = cron
    assert len(line.split()[:5]) == 5 and "flock -n" in line and "lawclf screen run" in line
