"""The use cases: book, cancel, create and update an event, register, log in.

Each is one function that takes its ports (application/ports.py) as arguments, so it runs in a
unit test with in-memory fakes and no Ray, HTTP or Postgres. Routes parse the request, call a
use case and shape its answer; actors and storage are reached only through the ports. Failures
are `domain.errors.TicketFlowError` subclasses, which the API maps to the spec's envelope.

May import: domain, stdlib. Never ray, asyncpg, fastapi, storage, actors or api.
"""
