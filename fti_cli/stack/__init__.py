"""The local development stack: Apache Kafka (KRaft, from Maven Central jars) and Redis, no Docker."""

from fti_cli.stack.errors import StackError
from fti_cli.stack.manager import ServiceStatus, StackManager
from fti_cli.stack.settings import StackSettings

__all__ = ["ServiceStatus", "StackError", "StackManager", "StackSettings"]
