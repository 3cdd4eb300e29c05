"""Per-connection rate limits: token buckets on the injected clock (pure).

Each connection gets two buckets, one for frames and one for operations. A
bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a frame
(or a push of ``n`` operations) takes one token (or ``n``). A frame that finds
its bucket short is refused; the hub answers ``rate-limited`` and closes the
connection, which resumes from its cursor when it comes back.
"""

from __future__ import annotations

from dataclasses import dataclass

from .clock import Clock, SystemClock
from .durations import NS_PER_SECOND
from .errors import ConfigError

__all__ = ["RateLimit", "TokenBucket"]


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second of monotonic time."""

    __slots__ = ("burst", "rate", "tokens", "updated_ns")

    def __init__(self, rate: float, burst: float, now_ns: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated_ns = now_ns

    def take(self, amount: float, now_ns: int) -> bool:
        """Take ``amount`` tokens if the bucket holds them; refill first."""
        elapsed = max(0, now_ns - self.updated_ns)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate / NS_PER_SECOND)
        self.updated_ns = now_ns
        if amount > self.tokens:
            return False
        self.tokens -= amount
        return True


@dataclass
class _Buckets:
    frames: TokenBucket | None
    ops: TokenBucket | None


class RateLimit:
    """Frames per second and operations per second, per connection.

    Args:
        frames_per_second: sustained frame rate; ``None`` leaves frames unlimited.
        ops_per_second: sustained operation rate; ``None`` leaves them unlimited.
        burst_seconds: each bucket holds this many seconds' worth of tokens, so
            a client that was quiet may send a burst. A push of more operations
            than the ops bucket holds is always refused: keep
            ``ops_per_second * burst_seconds`` at or above the clients'
            ``max_batch_ops``.
        clock: the monotonic time source.
    """

    def __init__(
        self,
        *,
        frames_per_second: float | None = None,
        ops_per_second: float | None = None,
        burst_seconds: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        for name, value in (
            ("frames_per_second", frames_per_second),
            ("ops_per_second", ops_per_second),
            ("burst_seconds", burst_seconds),
        ):
            if value is not None and not value > 0:
                raise ConfigError(name, f"must be positive, got {value!r}")
        self.frames_per_second = frames_per_second
        self.ops_per_second = ops_per_second
        self.burst_seconds = burst_seconds
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._conns: dict[int, _Buckets] = {}

    def admit(self, conn: int, ops: int = 0) -> str | None:
        """Count one frame carrying ``ops`` operations from ``conn``.

        Returns:
            ``None`` when admitted, else which limit was hit (``frames``/``ops``).
        """
        now = self.clock.monotonic_ns()
        buckets = self._conns.get(conn)
        if buckets is None:
            buckets = self._conns[conn] = _Buckets(
                self._bucket(self.frames_per_second, now),
                self._bucket(self.ops_per_second, now),
            )
        if buckets.frames is not None and not buckets.frames.take(1, now):
            return "frames"
        if ops and buckets.ops is not None and not buckets.ops.take(ops, now):
            return "ops"
        return None

    def forget(self, conn: int) -> None:
        self._conns.pop(conn, None)

    def _bucket(self, rate: float | None, now_ns: int) -> TokenBucket | None:
        if rate is None:
            return None
        return TokenBucket(rate, max(1.0, rate * self.burst_seconds), now_ns)
