"""The usual designs TicketFlow is measured against (plain FastAPI/uvicorn + asyncpg services)."""
