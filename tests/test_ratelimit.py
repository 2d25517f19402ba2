"""Tests for workers.ratelimit: per-user and per-target request limits on real storage backends."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from limits.storage import MemoryStorage, RedisStorage, Storage

from workers.models import Requester, Role
from workers.ratelimit import RateLimited, RateLimits, RequestLimiter, describe_wait

TARGET = "127.0.0.23"
OTHER_TARGET = "127.0.0.24"


@pytest.fixture(params=["redis", "memory"])
def storage(request: pytest.FixtureRequest) -> Iterator[Storage]:
    """The limits storage the product uses (Redis, on the flushed test server) and memory."""
    if request.param == "redis":
        request.getfixturevalue("redis_client")
        redis_url: str = request.getfixturevalue("redis_url")
        backend: Storage = RedisStorage(redis_url)
    else:
        backend = MemoryStorage()
    yield backend
    backend.reset()


def person(user: str, platform: str = "telegram") -> Requester:
    """A requester on a platform."""
    return Requester(platform=platform, user=user)


def test_home_user_gets_three_per_hour(storage: Storage) -> None:
    """The default home-user limit accepts three requests and refuses the fourth for an hour."""
    limiter = RequestLimiter(storage)
    user = person("1")
    for _ in range(3):
        limiter.hit(user, Role.USER, TARGET)
    with pytest.raises(RateLimited) as limited:
        limiter.hit(user, Role.USER, TARGET)
    assert 0 < limited.value.retry_after_s <= 3600
    assert limited.value.reason.startswith("you have reached the limit of 3 scans per hour")
    assert "try again in" in limited.value.reason


def test_user_limit_applies_across_targets_and_not_across_users(storage: Storage) -> None:
    """A user's limit covers every target, while other users (and platforms) keep their own."""
    limiter = RequestLimiter(storage)
    for target in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        limiter.hit(person("1"), Role.USER, target)
    with pytest.raises(RateLimited):
        limiter.hit(person("1"), Role.USER, "127.0.0.4")
    limiter.hit(person("2"), Role.USER, "127.0.0.4")
    limiter.hit(person("1", platform="slack"), Role.USER, "127.0.0.4")


@pytest.mark.parametrize("role", [Role.AGENT, Role.ADMIN])
def test_agent_limit_is_separate_and_higher(storage: Storage, role: Role) -> None:
    """Agents and admins use the agent limit, not the home user's three per hour."""
    limiter = RequestLimiter(storage, RateLimits(agent="5/hour", target="100/hour"))
    agent = person("U1", platform="slack")
    for index in range(5):
        limiter.hit(agent, role, f"127.0.0.{index + 1}")
    with pytest.raises(RateLimited) as limited:
        limiter.hit(agent, role, "127.0.0.9")
    assert "limit of 5 scans per hour" in limited.value.reason
    assert 0 < limited.value.retry_after_s <= 3600


def test_per_target_limit_counts_every_user(storage: Storage) -> None:
    """One address can be asked about only so often, however many users ask."""
    limiter = RequestLimiter(storage, RateLimits(target="4/hour"))
    for index in range(4):
        limiter.hit(person(str(index)), Role.USER, TARGET)
    with pytest.raises(RateLimited) as limited:
        limiter.hit(person("99"), Role.USER, TARGET)
    assert limited.value.reason.startswith(f"{TARGET} has reached the limit of 4 scans per hour")
    assert 0 < limited.value.retry_after_s <= 3600
    limiter.hit(person("99"), Role.USER, OTHER_TARGET)


def test_check_counts_nothing(storage: Storage) -> None:
    """check() only asks: any number of checks leaves the whole budget for real requests."""
    limiter = RequestLimiter(storage)
    user = person("1")
    for _ in range(20):
        limiter.check(user, Role.USER, TARGET)
    for _ in range(3):
        limiter.hit(user, Role.USER, TARGET)
    with pytest.raises(RateLimited):
        limiter.check(user, Role.USER, TARGET)


def test_refused_request_does_not_use_up_the_target_budget(storage: Storage) -> None:
    """A request refused by the user limit is not counted against the target's limit."""
    limiter = RequestLimiter(storage, RateLimits(user="3/hour", target="4/hour"))
    for _ in range(3):
        limiter.hit(person("1"), Role.USER, TARGET)
    for _ in range(5):
        with pytest.raises(RateLimited):
            limiter.hit(person("1"), Role.USER, TARGET)
    limiter.hit(person("2"), Role.USER, TARGET)
    with pytest.raises(RateLimited):
        limiter.hit(person("3"), Role.USER, TARGET)


@pytest.mark.parametrize(
    "user",
    ["a/b", "1:2:3", " ", "*", "\x00", "\x1b[31m", "<b>", "-oX", "pp-target/127.0.0.23", ""],
)
def test_hostile_user_ids_never_become_requesters(user: str) -> None:
    """User ids with separators, markup, controls or a leading dash are refused before any limit."""
    with pytest.raises(ValueError, match="user"):
        person(user)


@pytest.mark.parametrize("user", ["u" * 128, "pp-target", "a.b@c+d", "U012AB", "1234567890"])
def test_odd_but_valid_user_ids_get_their_own_buckets(storage: Storage, user: str) -> None:
    """Unusual valid user ids neither break the limiter nor share another user's bucket."""
    limiter = RequestLimiter(storage, RateLimits(user="1/hour", target="100/hour"))
    limiter.hit(person(user), Role.USER, TARGET)
    with pytest.raises(RateLimited) as limited:
        limiter.hit(person(user), Role.USER, TARGET)
    assert "limit of 1 scan per hour" in limited.value.reason
    limiter.hit(person("plain"), Role.USER, TARGET)


def test_wording_for_multi_unit_windows(storage: Storage) -> None:
    """A limit over several units is worded with the count and plural unit."""
    limiter = RequestLimiter(storage, RateLimits(user="2/2 hours"))
    limiter.hit(person("1"), Role.USER, TARGET)
    limiter.hit(person("1"), Role.USER, TARGET)
    with pytest.raises(RateLimited) as limited:
        limiter.hit(person("1"), Role.USER, TARGET)
    assert "limit of 2 scans per 2 hours" in limited.value.reason
    assert 3600 < limited.value.retry_after_s <= 7200


def test_redis_backend_keeps_counts_in_redis(redis_url: str, redis_client: redis.Redis) -> None:
    """With Redis storage the counts live in the shared Redis, so a second limiter sees them."""
    first = RequestLimiter(RedisStorage(redis_url))
    second = RequestLimiter(RedisStorage(redis_url))
    for _ in range(3):
        first.hit(person("1"), Role.USER, TARGET)
    with pytest.raises(RateLimited):
        second.check(person("1"), Role.USER, TARGET)
    assert redis_client.keys("LIMITS:*")


@pytest.mark.parametrize("rate", ["lots", "", "3 per fortnight", "-1/hour", "3/hour\x00"])
def test_invalid_rate_strings_fail_at_construction(rate: str) -> None:
    """A limit that `limits` cannot parse fails when the limiter is built, not per request."""
    with pytest.raises(ValueError, match=r"couldn't parse rate limit string|no granularity"):
        RequestLimiter(MemoryStorage(), RateLimits(user=rate))


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (-5, "1 second"),
        (0, "1 second"),
        (1, "1 second"),
        (2, "2 seconds"),
        (59, "59 seconds"),
        (89, "89 seconds"),
        (90, "2 minutes"),
        (120, "2 minutes"),
        (121, "3 minutes"),
        (3600, "60 minutes"),
    ],
)
def test_describe_wait_wording(seconds: int, words: str) -> None:
    """Waits read as seconds below 90 s and as whole minutes, rounded up, above."""
    assert describe_wait(seconds) == words


@given(st.integers(min_value=1, max_value=10**7))
@hypothesis_settings(deadline=None)
def test_describe_wait_never_understates_the_wait(seconds: int) -> None:
    """The described wait is never shorter than the real one, so retrying then will work."""
    match = re.fullmatch(r"(\d+) (second|seconds|minutes)", describe_wait(seconds))
    assert match is not None
    amount = int(match.group(1)) * (60 if match.group(2) == "minutes" else 1)
    assert seconds <= amount < seconds + 60
