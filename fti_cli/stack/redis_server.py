"""A local Redis from the `redis-server` on PATH."""

from __future__ import annotations

from fti_cli.stack.settings import StackSettings

__all__ = ["redis_command", "redis_marker"]


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
        # Keep the command line as started: `up` recognises its process by it ("--port N"),
        # also in the first milliseconds, before redis would have renamed itself "<bind>:<port>".
        "--set-proc-title",
        "no",
    ]
    password = settings.redis_password
    if password:
        args += ["--requirepass", password]
    return args


def redis_marker(settings: StackSettings) -> str:
    """What the command line of the Redis `up` started always holds (checked before signalling it)."""
    return f"--port {settings.redis_host_port[1]}"
