"""/api/users: register, login, me."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request

from api.deps import PrincipalDep, ServicesDep, client_ip
from api.schemas import LoginRequest, LoginResponse, LoginUser, RegisterUserRequest, UserResponse
from application import users
from domain.errors import Unauthorized
from domain.users import User
from storage import user_repository

router = APIRouter(prefix="/api/users", tags=["users"])


def user_response(user: User) -> UserResponse:
    return UserResponse(
        id=user.id,
        name=user.name,
        email=user.email,
        role=user.role.value,
        createdAt=user.created_at,
    )


@router.post("/register", status_code=201, response_model=UserResponse)
async def register(body: RegisterUserRequest, request: Request, svc: ServicesDep) -> UserResponse:
    """Create a USER account: name 2-100 characters; password at least 8 characters with an
    uppercase letter and a digit. Emails are unique case-insensitively (409 `EMAIL_ALREADY_EXISTS`)
    and stored lower-cased. Rate-limited per client address."""
    await svc.limiter.hit(svc.limit("auth"), client_ip(request))
    user = await users.register(
        name=body.name,
        email=body.email,
        password=body.password,
        db=svc.database,
        passwords=svc.passwords,
    )
    return user_response(user)


@router.post("/login", response_model=LoginResponse)
async def login(body: LoginRequest, request: Request, svc: ServicesDep) -> LoginResponse:
    """Exchange an email and password for a bearer token (HS256 JWT, 24 h by default).

    Send it as `Authorization: Bearer <token>`. A wrong email or password: 401
    `INVALID_CREDENTIALS`. Rate-limited per client address and per account.
    """
    await svc.limiter.hit(svc.limit("auth"), client_ip(request))
    # Per account too, so a botnet cannot guess one password from many addresses.
    await svc.limiter.hit(
        svc.limit("login"), hashlib.sha256(body.email.strip().lower().encode()).hexdigest()[:32]
    )
    done = await users.login(
        email=body.email,
        password=body.password,
        db=svc.database,
        passwords=svc.passwords,
        tokens=svc.tokens,
    )
    user = done.user
    return LoginResponse(
        token=done.token.token,
        expiresAt=done.token.expires_at,
        user=LoginUser(id=user.id, name=user.name, email=user.email, role=user.role.value),
    )


@router.get("/me", response_model=UserResponse)
async def me(principal: PrincipalDep, svc: ServicesDep) -> UserResponse:
    """The account the bearer token belongs to, as it is now."""
    async with svc.connection() as conn:
        user = await user_repository.get(conn, principal.user_id)
    if user is None:
        raise Unauthorized("The token's user no longer exists")
    return user_response(user)
