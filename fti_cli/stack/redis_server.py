"""A local Redis from the `redis-server` on PATH."""

from __future__ import annotations

from fti_cli.stack.settings import StackSettings

__all__ = ["redis_command"]


def redis_command(redis_server: str, settings: StackSettings) -> list[str]:
    host, port = settings.redis_host_port
    rdir = settings.root / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    args = [
        redis_server,
        "--bind",
        "127.0.0.1" if host in ("localhost", "127.0.0.1") else host,
        "--port",
        str(port),
        "--dir",
        str(rdir),
        "--logfile",
        str(rdir / "redis.log"),
        "--daemonize",
        "no",
        # Append-only persistence: features written before a restart are still there after it.
        "--appendonly",
        "yes",
        "--save",
        "",
    ]
    password = settings.redis_password
    if password:
        args += ["--requirepass", password]
    return args
