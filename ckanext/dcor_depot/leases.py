"""Leases in Redis: work that only one process at a time may do, on any host.

A lease is a Redis key holding its holder's random token. It expires unless
renewed, so a holder that dies (SIGKILL, a lost host) delays the others by
at most one lease period; while the work runs, a thread renews it. Only the
holder can renew or release it (compare-and-set in one Lua script).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid

import ckan.plugins.toolkit as tk
import redis

from . import config

log = logging.getLogger(__name__)

#: The kinds of the extension's Redis keys, each named here only (:func:`redis_key`):
#: leases; a dataset's convergence requested; a circle's line of datasets to converge; the
#: latest job of a kind for an object; the guard while one process queues a job; a
#: dataset's visibility fingerprint; a bucket the workers made ready; an upload job that
#: started; a circle's turn of convergence queued or running.
REDIS_KEY_KINDS = (
    "lease",
    "converge",
    "line",
    "job",
    "enqueue",
    "fingerprint",
    "bucket",
    "upload",
    "turn",
)


def redis_key(kind: str, name: str) -> str:
    """``dcor_depot:<kind>:<name>``: the one way the extension names a Redis key."""
    if kind not in REDIS_KEY_KINDS:
        raise ValueError(f"Unknown kind of Redis key {kind!r}: add it to REDIS_KEY_KINDS")
    return f"dcor_depot:{kind}:{name}"


_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


class LeaseHeld(Exception):
    """Another process holds the lease."""


class LeaseLost(Exception):
    """The lease expired before it was renewed (the holder paused longer than a period)."""


@functools.lru_cache(maxsize=1)
def connection() -> redis.Redis:
    """CKAN's Redis with short timeouts: an unreachable Redis fails fast instead of hanging."""
    return redis.Redis.from_url(
        tk.config["ckan.redis.url"], socket_connect_timeout=2, socket_timeout=5
    )


class Lease:
    """``with Lease(name):`` holds the lease for the block (renewed while it runs); the
    names are made in ``locks.py``."""

    def __init__(
        self,
        name: str,
        seconds: float | None = None,
        wait: float = 0.0,
        client: redis.Redis | None = None,
    ):
        self.key = redis_key("lease", name)
        #: the Redis to use (default: CKAN's, :func:`connection`)
        self.client = client
        #: seconds the lease lives without renewal (default: ``ckanext.dcor_depot.lease_seconds``)
        self.seconds = config.lease_seconds() if seconds is None else seconds
        #: seconds to wait for a lease held elsewhere before :class:`LeaseHeld`
        self.wait = wait
        self.token = uuid.uuid4().hex
        #: set by the renewer when the lease expired and was not this holder's any more
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lease, waiting up to ``wait`` seconds; False when it stayed held."""
        deadline = time.monotonic() + self.wait
        pause = 0.05
        while True:
            if self._redis().set(self.key, self.token, nx=True, px=int(self.seconds * 1000)):
                self._stop.clear()
                self.lost.clear()
                self._renewer = threading.Thread(
                    target=self._renew, name=f"lease {self.key}", daemon=True
                )
                self._renewer.start()
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 1.0)

    def remaining(self) -> float:
        """Seconds until the lease ends unless its holder renews it (0 when it is free)."""
        return max(0, self._redis().pttl(self.key)) / 1000

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        self._redis().eval(_RELEASE, 1, self.key, self.token)

    def ensure_held(self) -> None:
        """Renew the lease now, or raise :class:`LeaseLost`: call it before a step
        that must not be done twice at once (the rename of a finished file)."""
        if self.lost.is_set() or not self._renew_once():
            self.lost.set()
            raise LeaseLost(f"{self.key} expired before it was renewed and may be held elsewhere")

    def _renew_once(self) -> bool:
        return bool(self._redis().eval(_RENEW, 1, self.key, self.token, int(self.seconds * 1000)))

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                renewed = self._renew_once()
            except redis.RedisError as exc:
                log.warning("Could not renew %s: %s", self.key, exc)
                continue
            if not renewed:
                self.lost.set()
                log.error("Lost %s: it expired before it was renewed", self.key)
                return

    def _redis(self) -> redis.Redis:
        return self.client if self.client is not None else connection()

    def __enter__(self) -> Lease:
        if not self.acquire():
            raise LeaseHeld(f"{self.key} is held by another process")
        return self

    def __exit__(self, *exc) -> None:
        self.release()
