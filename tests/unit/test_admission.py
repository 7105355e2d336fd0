"""Admission tokens and admission pacing (domain/admission.py): no I/O, a fake clock."""

from __future__ import annotations

import base64
import bisect
import json
import random

import pytest

from domain.admission import (
    DEFAULT_WINDOW_SECONDS,
    AdmissionPacer,
    AdmissionTokens,
    admission_key,
)
from domain.errors import (
    AdmissionExpired,
    AdmissionForAnotherEvent,
    AdmissionForAnotherUser,
    AdmissionRequired,
    AdmissionTokenForged,
    AdmissionTokenMalformed,
)

SECRET = "k3y-for-tests-only-" + "0123456789abcdef"
USER, OTHER_USER = "usr_01HAAAAAAAAAAAAAAAAAAAAAAA", "usr_01HBBBBBBBBBBBBBBBBBBBBBBB"
EVENT, OTHER_EVENT = "evnt_01HCCCCCCCCCCCCCCCCCCCCCCC", "evnt_01HDDDDDDDDDDDDDDDDDDDDDDD"
T0 = 1_800_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tokens(clock: FakeClock) -> AdmissionTokens:
    return AdmissionTokens(key=admission_key(SECRET), clock=clock)


def _payload(token: str) -> dict[str, object]:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))  # type: ignore[no-any-return]


def _with_payload(token: str, payload: dict[str, object]) -> str:
    version, _, mac = token.split(".")
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{version}.{body}.{mac}"


# ---- tokens --------------------------------------------------------------------------------


def test_a_valid_token_admits_its_user_to_its_event(tokens: AdmissionTokens) -> None:
    issued = tokens.issue(user_id=USER, event_id=EVENT)
    claims = tokens.verify(issued.token, user_id=USER, event_id=EVENT)
    assert claims == issued.claims
    assert (claims.user_id, claims.event_id) == (USER, EVENT)
    assert claims.expires_at - claims.issued_at == DEFAULT_WINDOW_SECONDS == 600


def test_a_token_admits_several_attempts_within_its_window(
    tokens: AdmissionTokens, clock: FakeClock
) -> None:
    token = tokens.issue(user_id=USER, event_id=EVENT).token
    for _ in range(5):
        tokens.verify(token, user_id=USER, event_id=EVENT)
        clock.advance(100)
    clock.advance(99)  # 599 s after the admission: still inside the 600-s window
    tokens.verify(token, user_id=USER, event_id=EVENT)


def test_an_expired_token_is_refused(tokens: AdmissionTokens, clock: FakeClock) -> None:
    token = tokens.issue(user_id=USER, event_id=EVENT).token
    clock.advance(DEFAULT_WINDOW_SECONDS)
    with pytest.raises(AdmissionExpired):
        tokens.verify(token, user_id=USER, event_id=EVENT)


def test_the_window_counts_from_the_admission_not_from_the_read(
    tokens: AdmissionTokens, clock: FakeClock
) -> None:
    admitted_at = clock.now
    clock.advance(400)  # the buyer reads their place (and the token) long after being admitted
    issued = tokens.issue(user_id=USER, event_id=EVENT, admitted_at=admitted_at)
    assert issued.token == tokens.issue(user_id=USER, event_id=EVENT, admitted_at=admitted_at).token
    clock.advance(200)
    with pytest.raises(AdmissionExpired):
        tokens.verify(issued.token, user_id=USER, event_id=EVENT)


def test_a_token_signed_with_another_key_is_refused_as_forged(
    tokens: AdmissionTokens, clock: FakeClock
) -> None:
    forger = AdmissionTokens(key=admission_key("another-secret-" + "fedcba9876543210"), clock=clock)
    token = forger.issue(user_id=USER, event_id=EVENT).token
    with pytest.raises(AdmissionTokenForged):
        tokens.verify(token, user_id=USER, event_id=EVENT)


def test_a_jwt_signed_with_the_secret_itself_is_not_an_admission_token(
    tokens: AdmissionTokens,
) -> None:
    import hashlib
    import hmac

    # Same format, but signed with JWT_SECRET directly instead of the derived admission key.
    good = tokens.issue(user_id=USER, event_id=EVENT).token
    signed = good.rsplit(".", 1)[0]
    mac = hmac.new(SECRET.encode(), signed.encode(), hashlib.sha256).digest()
    token = f"{signed}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(AdmissionTokenForged):
        tokens.verify(token, user_id=USER, event_id=EVENT)


def test_a_token_for_another_user_is_refused(tokens: AdmissionTokens) -> None:
    token = tokens.issue(user_id=OTHER_USER, event_id=EVENT).token
    with pytest.raises(AdmissionForAnotherUser):
        tokens.verify(token, user_id=USER, event_id=EVENT)


def test_a_token_for_another_event_is_refused(tokens: AdmissionTokens) -> None:
    token = tokens.issue(user_id=USER, event_id=OTHER_EVENT).token
    with pytest.raises(AdmissionForAnotherEvent):
        tokens.verify(token, user_id=USER, event_id=EVENT)


@pytest.mark.parametrize(
    "change",
    [
        {"u": OTHER_USER},  # my admission, relabelled for someone else
        {"e": OTHER_EVENT},  # this event's admission, relabelled for another
        {"exp": int(T0) + 10 * DEFAULT_WINDOW_SECONDS},  # a longer window
    ],
    ids=["user", "event", "expiry"],
)
def test_a_tampered_payload_is_refused_as_forged(
    tokens: AdmissionTokens, change: dict[str, object]
) -> None:
    issued = tokens.issue(user_id=USER, event_id=EVENT)
    tampered = _with_payload(issued.token, {**_payload(issued.token), **change})
    claimed = {**_payload(tampered)}
    user, event = claimed["u"], claimed["e"]
    assert isinstance(user, str) and isinstance(event, str)
    with pytest.raises(AdmissionTokenForged):
        tokens.verify(tampered, user_id=user, event_id=event)


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "adm1.x.y",
        "adm1..",
        "adm2.e30.AAAA",
        "a.b.c.d",
        "adm1.e30." + "A" * 43 + "!",
        "x" * 5000,
    ],
)
def test_a_malformed_token_is_refused(tokens: AdmissionTokens, token: str) -> None:
    with pytest.raises(AdmissionTokenMalformed):
        tokens.verify(token, user_id=USER, event_id=EVENT)


@pytest.mark.parametrize("token", [None, ""])
def test_no_token_is_refused(tokens: AdmissionTokens, token: str | None) -> None:
    with pytest.raises(AdmissionRequired) as refused:
        tokens.verify(token, user_id=USER, event_id=EVENT)
    assert type(refused.value) is AdmissionRequired


def test_every_refusal_is_one_403_admission_required_for_the_client() -> None:
    for cls in (
        AdmissionRequired,
        AdmissionTokenMalformed,
        AdmissionTokenForged,
        AdmissionExpired,
        AdmissionForAnotherUser,
        AdmissionForAnotherEvent,
    ):
        assert issubclass(cls, AdmissionRequired)
        assert (cls.code, cls.http_status) == ("ADMISSION_REQUIRED", 403)


def test_tokens_from_the_previous_key_are_accepted_during_a_rotation(clock: FakeClock) -> None:
    old_key, new_key = admission_key(SECRET), admission_key("rotated-secret-" + "0011223344556677")
    before = AdmissionTokens(key=old_key, clock=clock).issue(user_id=USER, event_id=EVENT).token
    after = AdmissionTokens(key=new_key, previous_keys=[old_key], clock=clock)
    after.verify(before, user_id=USER, event_id=EVENT)
    with pytest.raises(AdmissionTokenForged):
        AdmissionTokens(key=new_key, clock=clock).verify(before, user_id=USER, event_id=EVENT)


def test_the_token_carries_no_secret_and_only_the_documented_claims(
    tokens: AdmissionTokens,
) -> None:
    token = tokens.issue(user_id=USER, event_id=EVENT).token
    assert token.startswith("adm1.")
    assert set(_payload(token)) == {"u", "e", "iat", "exp"}
    assert SECRET not in token


# ---- pacing --------------------------------------------------------------------------------


class Admissions:
    """A record of admission times with the counts the pacer takes (as Redis would answer)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def since(self, t: float) -> int:
        """Admissions strictly after `t`."""
        return len(self.times) - bisect.bisect_right(self.times, t)

    def add(self, at: float, n: int) -> None:
        self.times.extend([at] * n)


def _max_in_any_window(times: list[float], window: float) -> int:
    """The most admissions in any half-open window (t - window, t]."""
    best = 0
    for t in times:
        best = max(best, bisect.bisect_right(times, t) - bisect.bisect_right(times, t - window))
    return best


@pytest.mark.parametrize("per_minute", [1, 7, 60, 100, 1000])
def test_pacing_never_admits_above_the_rate_over_an_hour(per_minute: int) -> None:
    """An hour with an irregular admitter (ticks of 0.05 to 3 s, and stalls of up to 5 minutes):
    no 60-second window ever holds more than the rate, and the hour admits what the rate allows."""
    rng = random.Random(per_minute)  # the test is deterministic; no real time passes
    pacer = AdmissionPacer(per_minute=per_minute)
    opened, now, end = T0, T0, T0 + 3600
    done = Admissions()
    stalled = 0.0
    while now < end:
        n = pacer.allowance(
            elapsed_seconds=now - opened,
            admitted=len(done.times),
            admitted_last_minute=done.since(now - 60),
            seats_left=10**9,
        )
        assert n >= 0
        done.add(now, n)
        assert len(done.times) <= per_minute * (now - opened) / 60  # never ahead of the schedule
        if rng.random() < 0.01:
            pause = rng.uniform(30, 300)
            stalled += pause
        else:
            pause = rng.uniform(0.05, 3.0)
        now += pause
    assert _max_in_any_window(done.times, 60.0) <= per_minute
    # Liveness: apart from what the stalls cost, the hour admits at the rate.
    assert len(done.times) >= per_minute * (3600 - stalled) / 60 - per_minute


def test_pacing_after_a_stall_catches_up_by_one_minute_at_most() -> None:
    pacer = AdmissionPacer(per_minute=600)
    # Ten minutes of nothing admitted (the admitter was down): the schedule owes 6000.
    assert (
        pacer.allowance(elapsed_seconds=600, admitted=0, admitted_last_minute=0, seats_left=10**6)
        == 600
    )
    assert (
        pacer.allowance(
            elapsed_seconds=601, admitted=600, admitted_last_minute=600, seats_left=10**6
        )
        == 0
    )


def test_pacing_admits_nothing_before_the_opening() -> None:
    pacer = AdmissionPacer(per_minute=100)
    assert (
        pacer.allowance(elapsed_seconds=-1, admitted=0, admitted_last_minute=0, seats_left=100) == 0
    )
    assert (
        pacer.allowance(elapsed_seconds=0, admitted=0, admitted_last_minute=0, seats_left=100) == 0
    )
    assert (
        pacer.allowance(elapsed_seconds=0.6, admitted=0, admitted_last_minute=0, seats_left=100)
        == 1
    )


def test_pacing_never_admits_more_than_the_seats_left_could_serve() -> None:
    pacer = AdmissionPacer(per_minute=6000)
    kw = {"elapsed_seconds": 60.0, "admitted": 0, "admitted_last_minute": 0}
    assert pacer.allowance(**kw, seats_left=25) == 25
    assert pacer.allowance(**kw, seats_left=25, holding=20) == 5  # 20 admitted buyers may still buy
    assert pacer.allowance(**kw, seats_left=25, holding=30) == 0
    assert pacer.allowance(**kw, seats_left=0) == 0


def test_pacing_with_a_seat_cap_over_an_hour_never_admits_beyond_the_seats() -> None:
    """Seats sell as admitted buyers buy; the admitted-and-still-holding never exceed the seats left."""
    rng = random.Random(7)
    pacer = AdmissionPacer(per_minute=120)
    window = 600.0
    seats_left, now, opened = 300, T0, T0
    done = Admissions()
    buyers: list[float] = []  # admission times of buyers who have not bought yet
    while now < T0 + 3600:
        holding = sum(1 for t in buyers if t > now - window)
        n = pacer.allowance(
            elapsed_seconds=now - opened,
            admitted=len(done.times),
            admitted_last_minute=done.since(now - 60),
            seats_left=seats_left,
            holding=holding,
        )
        assert holding + n <= seats_left
        done.add(now, n)
        buyers.extend([now] * n)
        # Some holding buyers buy one seat each; the rest wait or let their window lapse.
        still = []
        for t in buyers:
            if t > now - window and rng.random() < 0.05 and seats_left > 0:
                seats_left -= 1
            elif t > now - window:
                still.append(t)
        buyers = still
        now += rng.uniform(0.5, 2.0)
    assert seats_left >= 0
    assert _max_in_any_window(done.times, 60.0) <= 120


def test_the_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        AdmissionPacer(per_minute=0)


def test_estimated_wait_follows_the_rate() -> None:
    assert AdmissionPacer(per_minute=60).estimated_wait_seconds(59) == 60.0
    assert AdmissionPacer(per_minute=600).estimated_wait_seconds(0) == 0.1
