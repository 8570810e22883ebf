"""Redis key names of the breaker flags: `<prefix>:<kind>[:<member>]`.

The prefix lets several services (or test runs) share one Redis without seeing each other.
The router reads these keys too (dashboard, CLI, metrics), so it imports them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BREAKER_PREFIX = "breakers"


@dataclass(frozen=True)
class BreakerKeys:
    """Keys of the breaker flags that `breaker_client` reads and writes.

    One breaker is a breaker name plus an optional key (`bank-charge`, `bank-charge` + `0001`);
    its *member* string is `<name>` or `<name>:<key>`. Breaker names never contain `:`, so the
    member splits back unambiguously while a key may contain anything.
    """

    prefix: str = DEFAULT_BREAKER_PREFIX

    @property
    def index(self) -> str:
        """Set of every breaker member ever written: what a full resync and `list()` read."""
        return f"{self.prefix}:index"

    @property
    def channel(self) -> str:
        """Pub/sub channel: each change publishes the member whose record changed."""
        return f"{self.prefix}:changes"

    # The next three sit beside `index`: the write scripts derive them from its name.
    @property
    def revision(self) -> str:
        """Counter: the revision of the newest breaker write (every write takes the next)."""
        return f"{self.prefix}:revision"

    @property
    def revisions(self) -> str:
        """Sorted set of member -> revision of its last write (or prune): what resyncs read."""
        return f"{self.prefix}:revisions"

    @property
    def written(self) -> str:
        """Sorted set of member -> ms of its last write (or last prune check): what prunes read."""
        return f"{self.prefix}:written"

    def member_keys(self, member: str) -> tuple[str, ...]:
        """Every key that belongs to one breaker; pruning a breaker deletes exactly these."""
        return (
            self.record(member),
            self.history(member),
            self.groups(member),
            self.shadow(member),
        )

    def record(self, member: str) -> str:
        """Hash holding one breaker's state, override and version (see breaker_client.store)."""
        return f"{self.prefix}:state:{member}"

    def history(self, member: str) -> str:
        """Capped stream of one breaker's changes, oldest first."""
        return f"{self.prefix}:history:{member}"

    def groups(self, member: str) -> str:
        """Hash of monitor group -> `<version> <status>`: what drives a keyless breaker."""
        return f"{self.prefix}:groups:{member}"

    def shadow(self, member: str) -> str:
        """Hash of calls a breaker in shadow mode let through that it would have refused:
        `total`, and `<minute's start in Unix ms>` -> that minute's count."""
        return f"{self.prefix}:shadow:{member}"

    @property
    def shadow_prefix(self) -> str:
        return self.shadow("")

    def delivery_seen(self, webhook_id: str) -> str:
        """Marker (with a TTL) that a callback delivery was already handled."""
        return f"{self.prefix}:seen:{webhook_id}"

    @property
    def record_prefix(self) -> str:
        """`record(member)` without the member, for the Lua script that derives key names."""
        return self.record("")

    @property
    def history_prefix(self) -> str:
        return self.history("")

    @staticmethod
    def member(name: str, key: str | None) -> str:
        return name if key is None else f"{name}:{key}"

    @staticmethod
    def split_member(member: str) -> tuple[str, str | None]:
        name, sep, key = member.partition(":")
        return name, (key if sep else None)
