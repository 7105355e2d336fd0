"""Start-up data: the admin account from configuration, and the demo data on an empty database."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from api.auth import PasswordService, make_hasher
from config.settings import Settings
from domain.seating import TicketTier, generate_layout
from domain.users import Role, normalize_email, password_problem
from storage import catalog_repository, user_repository
from storage.pool import Conn

logger = logging.getLogger(__name__)

DEMO_USER = ("Test User", "test@ticketflow.dev", "Test1234!")
DEMO_VENUES = [
    # name, address, city, country, capacity, events: (name, description, days ahead, tiers)
    (
        "O2 Arena",
        "Peninsula Square",
        "London",
        "GB",
        20000,
        [
            (
                "Coldplay: Music of the Spheres",
                "World tour",
                30,
                [("VIP", 25000, 100), ("GENERAL", 7500, 900)],
            ),
            (
                "Arctic Monkeys Live",
                "The Car tour",
                60,
                [("VIP", 20000, 100), ("GENERAL", 6500, 900)],
            ),
        ],
    ),
    (
        "Madison Square Garden",
        "4 Pennsylvania Plaza",
        "New York",
        "US",
        20789,
        [
            (
                "Billy Joel in Concert",
                "Residency night",
                45,
                [("VIP", 30000, 100), ("GENERAL", 9900, 900)],
            ),
        ],
    ),
]


def password_service(settings: Settings) -> PasswordService:
    return PasswordService(
        make_hasher(
            memory_kib=settings.password_hash_memory_kib, time_cost=settings.password_hash_time_cost
        )
    )


class AdminEmailTaken(ValueError):
    """The admin email belongs to an account that TicketFlow's bootstrap did not create."""


async def create_admin(
    conn: Conn, settings: Settings, *, email: str, password: str, name: str = "Administrator"
) -> bool:
    """Creates the ADMIN account; True when created, False when it already exists as an ADMIN.

    Never promotes an existing account: whoever registered the email first would become an
    admin with their own password.

    Raises:
        ValueError: the email or password is not acceptable.
        AdminEmailTaken: the email belongs to an account that is not an ADMIN.
    """
    problem = password_problem(password)
    if problem:
        raise ValueError(f"admin {problem}")
    email = normalize_email(email)
    existing = await user_repository.get_by_email(conn, email)
    if existing is None:
        password_hash = await password_service(settings).hash(password)
        created = await user_repository.add(
            conn, name=name, email=email, password_hash=password_hash, role=Role.ADMIN
        )
        if created is not None:
            logger.info("admin account %s created", email)
            return True
        existing = await user_repository.get_by_email(conn, email)  # registered meanwhile
        assert existing is not None
    if existing.role is not Role.ADMIN:
        raise AdminEmailTaken(
            f"the admin email {email} is already registered as a {existing.role.value} account ({existing.id}) "
            "that TicketFlow did not create, so it is not made an ADMIN (it would keep its owner's password). "
            "Choose another admin email (TICKETFLOW_ADMIN_EMAIL or --email), or delete that account first."
        )
    logger.info("admin account %s already exists; its password is left unchanged", email)
    return False


async def ensure_admin_from_settings(conn: Conn, settings: Settings) -> bool:
    """The configured admin account at start-up; raises AdminEmailTaken rather than promote anyone."""
    return await create_admin(
        conn,
        settings,
        email=settings.admin_email,
        password=settings.admin_password.get_secret_value(),
    )


async def seed_demo(conn: Conn, settings: Settings, *, force: bool = False) -> bool:
    """Seeds the demo user, venues and events; only on an empty catalogue unless forced."""
    if (
        not force
        and await catalog_repository.get_venue_by_name(conn, DEMO_VENUES[0][0]) is not None
    ):
        return False
    name, email, password = DEMO_USER
    await user_repository.add(
        conn,
        name=name,
        email=email,
        password_hash=await password_service(settings).hash(password),
        role=Role.USER,
    )
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    async with conn.transaction():
        for v_name, address, city, country, capacity, events in DEMO_VENUES:
            venue = await catalog_repository.add_venue(
                conn, name=v_name, address=address, city=city, country=country, capacity=capacity
            )
            for e_name, description, days, tier_specs in events:
                currency = "GBP" if country == "GB" else "USD"
                tiers = [TicketTier(tier, price, currency, cap) for tier, price, cap in tier_specs]
                starts = (now + timedelta(days=days)).replace(hour=19, minute=30)
                await catalog_repository.add_event(
                    conn,
                    venue_id=venue.id,
                    name=e_name,
                    description=description,
                    starts_at=starts,
                    ends_at=starts + timedelta(hours=3, minutes=30),
                    tiers=tiers,
                    seats=generate_layout(tiers, seats_per_row=settings.seats_per_row),
                )
    logger.info("demo data seeded (user %s)", email)
    return True
