"""/api/events/{id}/queue and /api/queue/{ticket}: the virtual waiting room (docs/waiting-room.md).

Joining reads the event from Postgres (is there a room, when does the sale open); a place read is
one Redis script and nothing else, so any replica answers it and a replica's restart loses nobody's
place. The admission token is made from the admission Redis recorded, so every read of an admitted
place yields the same token, valid for the same window. Every answer says when to look next
(`retryAfterSeconds`, `Retry-After`: domain.next_look), which is what keeps a long line's reads
from crowding out the admitted buyers' bookings.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from redis.exceptions import RedisError

from actors import metrics
from api.deps import PrincipalDep, Services, ServicesDep
from api.http import current_request_id
from api.schemas import QueuePlace
from domain.admission import AdmissionPacer
from domain.admission_rate import START_PER_MINUTE
from domain.errors import (
    EventNotFound,
    EventNotOnSale,
    QueueTicketNotFound,
    ServiceUnavailable,
    WaitingRoomClosed,
    WaitingRoomNotEnabled,
)
from domain.next_look import next_look_seconds
from storage import catalog_repository
from storage.waiting_room import Place, PlaceStatus, QueueClosed

logger = logging.getLogger(__name__)
router = APIRouter(tags=["waiting room"])
T = TypeVar("T")

# The stream re-reads the place at the hint, within these bounds, and gives up after its lifetime
# (the client reconnects).
STREAM_INTERVAL_SECONDS = 1.0
STREAM_MAX_INTERVAL_SECONDS = 5.0
STREAM_LIFETIME_SECONDS = 300.0
_FINAL = (PlaceStatus.ADMITTED, PlaceStatus.CLOSED)
_streams_open = 0  # this replica's open place streams (the metric; a test watches it)


async def _redis(call: Awaitable[T]) -> T:
    """A waiting-room call; Redis unreachable is a 503, as any dependency that is down."""
    try:
        return await call
    except (RedisError, OSError, TimeoutError) as exc:
        raise ServiceUnavailable(
            f"The waiting room is unavailable ({type(exc).__name__}); retry shortly"
        ) from exc


def place_view(svc: Services, place: Place) -> QueuePlace:
    """The API's view of a place: the position while queued, the admission token once admitted,
    and when to look again."""
    rate = place.admit_per_minute or START_PER_MINUTE
    view = QueuePlace(
        ticket=place.ticket,
        eventId=place.event_id,
        status=place.status.value,
        position=place.position,
        ahead=place.ahead,
        waiting=place.waiting,
        retryAfterSeconds=next_look_seconds(
            status=place.status.value,
            rank=place.rank,
            per_minute=rate,
            waiting=place.waiting,
            until_opening=None if place.opens_at is None else place.opens_at - time.time(),
            reads_per_second=svc.settings.queue_reads_per_second,
            jitter=random.random(),
        ),
    )
    if place.status is PlaceStatus.QUEUED and place.ahead is not None:
        view.estimatedWaitSeconds = math.ceil(
            AdmissionPacer(rate).estimated_wait_seconds(place.ahead)
        )
    if place.status is PlaceStatus.ADMITTED and place.admitted_at is not None:
        issued = svc.admission.issue(
            user_id=place.user_id, event_id=place.event_id, admitted_at=place.admitted_at
        )
        view.admissionToken = issued.token
        view.admissionExpiresAt = datetime.fromtimestamp(issued.claims.expires_at, UTC)
    return view


def _answer(view: QueuePlace, status_code: int = 200) -> JSONResponse:
    headers = {} if view.retryAfterSeconds is None else {"Retry-After": str(view.retryAfterSeconds)}
    return JSONResponse(view.model_dump(mode="json"), status_code=status_code, headers=headers)


async def _own_place(svc: Services, ticket: str, user_id: str) -> Place:
    place = await _redis(svc.waiting_room().place(ticket))
    if place is None or place.user_id != user_id:
        raise QueueTicketNotFound(f"Queue ticket {ticket[:80]} does not exist")
    return place


@router.post(
    "/api/events/{event_id}/queue",
    status_code=201,
    response_model=QueuePlace,
    responses={200: {"model": QueuePlace, "description": "Joined before: the same ticket"}},
)
async def join_queue(event_id: str, principal: PrincipalDep, svc: ServicesDep) -> JSONResponse:
    """Join the event's waiting room: 201 with a queue ticket and its place (200 and the same
    ticket when the caller joined before: one place per user and event), and when to look at it
    next (`retryAfterSeconds`, also as `Retry-After`).

    Everyone who joins before `salesStartAt` is put in a random order at the opening (a fair
    lottery: arriving a second early buys nothing; until then the status is `WAITING`); later
    arrivals queue behind, in order (`QUEUED`). Follow the place with `GET /api/queue/{ticket}`.
    An unknown event: 404 `EVENT_NOT_FOUND`; an event without a waiting room: 409
    `WAITING_ROOM_NOT_ENABLED` (book directly); an event that has started: 409
    `EVENT_NOT_ON_SALE`; a room closed because the event sold out: 409 `WAITING_ROOM_CLOSED`.
    """
    async with svc.connection() as conn:
        event = await catalog_repository.get_event(conn, event_id)
    if event is None:
        raise EventNotFound(f"Event {event_id} does not exist")
    if not event.waiting_room.enabled:
        raise WaitingRoomNotEnabled(f"Event {event_id} has no waiting room; book it directly")
    if event.starts_at <= datetime.now(UTC):
        raise EventNotOnSale(f"Event {event_id} has started; its waiting room is closed")
    room = svc.waiting_room()
    opens_at = None if event.sales_start_at is None else event.sales_start_at.timestamp()
    try:
        joined = await _redis(
            room.join(
                event_id=event_id,
                user_id=principal.user_id,
                opens_at=opens_at,
                per_minute=event.waiting_room.admit_per_minute,
            )
        )
    except QueueClosed:
        raise WaitingRoomClosed(f"The waiting room of event {event_id} is closed: sold out")
    place = await _own_place(svc, joined.ticket, principal.user_id)
    if joined.new:
        logger.info(
            "queue joined",
            extra={
                "request_id": current_request_id(),
                "event_id": event_id,
                "user_id": principal.user_id,
            },
        )
    metrics.record_place_read("join")
    return _answer(place_view(svc, place), 201 if joined.new else 200)


@router.get(
    "/api/queue/{ticket}",
    response_model=QueuePlace,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def queue_place(
    ticket: str,
    request: Request,
    principal: PrincipalDep,
    svc: ServicesDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Where a queue ticket stands: `status`, `position`, `ahead`, `waiting`,
    `estimatedWaitSeconds` (at the current admission rate), and once `ADMITTED` the
    `admissionToken` (send it as `X-Admission-Token` when booking) and `admissionExpiresAt`
    (a documented window from the admission, `TICKETFLOW_ADMISSION_TOKEN_TTL_SECONDS`, default
    10 minutes; reading again never extends it). `CLOSED`: the event sold out before this ticket
    was admitted. Only the ticket's own user may read it (anyone else: 404
    `QUEUE_TICKET_NOT_FOUND`). Until the place is final, `retryAfterSeconds` (and `Retry-After`)
    says when the next look can bring news: about the buyer's turn, at most the room's horizon.

    With `Accept: text/event-stream` the same place comes as server-sent events (`event: place`,
    the JSON above as `data`): one whenever it changes (re-read at the hint, every 1 to 5 s),
    ending after `ADMITTED` or `CLOSED`, or after 5 minutes (reconnect to go on).
    """
    place = await _own_place(svc, ticket, principal.user_id)
    if accept is None or "text/event-stream" not in accept.lower():
        metrics.record_place_read("poll")
        return _answer(place_view(svc, place))
    return StreamingResponse(
        _stream(svc, request, place, principal.user_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# The places application (serve_app) serves the same read under its `/api/queue` route prefix.
places = APIRouter(tags=["waiting room"])
places.add_api_route(
    "/{ticket}",
    queue_place,
    methods=["GET"],
    response_model=QueuePlace,
    responses={200: {"content": {"text/event-stream": {}}}},
)


async def _stream(
    svc: Services, request: Request, place: Place, user_id: str
) -> AsyncIterator[str]:
    """The place as server-sent events: one per change, until final, bounded in time.

    A client that goes away ends it at the next look (Starlette also cancels the response when
    the connection closes), so an abandoned stream costs at most one more Redis read. The hint
    is left out of the comparison: it moves on every read, the place does not."""
    global _streams_open
    _streams_open += 1
    metrics.set_streams_open(_streams_open)
    try:
        deadline = time.monotonic() + STREAM_LIFETIME_SECONDS
        last = ""
        while True:
            view = place_view(svc, place)
            seen = view.model_dump_json(exclude={"retryAfterSeconds"})
            if seen != last:
                yield f"event: place\ndata: {view.model_dump_json()}\n\n"
                last = seen
            if place.status in _FINAL or time.monotonic() >= deadline:
                return
            hint = float(view.retryAfterSeconds or STREAM_INTERVAL_SECONDS)
            await asyncio.sleep(
                min(STREAM_MAX_INTERVAL_SECONDS, max(STREAM_INTERVAL_SECONDS, hint))
            )
            if await request.is_disconnected():
                return
            try:
                place = await _own_place(svc, place.ticket, user_id)
            except (ServiceUnavailable, QueueTicketNotFound) as exc:
                yield f"event: error\ndata: {exc.code}\n\n"
                return
            metrics.record_place_read("stream")
            metrics.set_streams_open(_streams_open)  # a gauge not set again drops out of exports
    finally:
        _streams_open -= 1
        metrics.set_streams_open(_streams_open)
