"""/api/users: register, login, me."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request

from api.deps import PrincipalDep, ServicesDep, client_ip
from api.schemas import LoginRequest, LoginResponse, LoginUser, RegisterUserRequest, UserResponse
from domain.errors import EmailAlreadyExists, InvalidCredentials, Unauthorized, ValidationFailed
from domain.users import User, clean_name, normalize_email, password_problem
from storage import user_repository

router = APIRouter(prefix="/api/users", tags=["users"])


def user_response(user: User) -> UserResponse:
    return UserResponse(id=user.id, name=user.name, email=user.email, role=user.role.value, createdAt=user.created_at)


@router.post("/register", status_code=201, response_model=UserResponse)
async def register(body: RegisterUserRequest, request: Request, svc: ServicesDep) -> UserResponse:
    await svc.limiter.hit(svc.limit("auth"), client_ip(request))
    try:
        name = clean_name(body.name)
        email = normalize_email(body.email)
    except ValueError as exc:
        raise ValidationFailed(str(exc))
    problem = password_problem(body.password)
    if problem:
        raise ValidationFailed(problem)
    password_hash = await svc.passwords.hash(body.password)
    pool = await svc.db()
    async with pool.acquire() as conn:
        user = await user_repository.add(conn, name=name, email=email, password_hash=password_hash)
    if user is None:
        raise EmailAlreadyExists(f"Email {email} is already registered")
    return user_response(user)


@router.post("/login", response_model=LoginResponse)
async def login(body: LoginRequest, request: Request, svc: ServicesDep) -> LoginResponse:
    await svc.limiter.hit(svc.limit("auth"), client_ip(request))
    # Per account too, so a botnet cannot guess one password from many addresses.
    await svc.limiter.hit(svc.limit("login"), hashlib.sha256(body.email.strip().lower().encode()).hexdigest()[:32])
    try:
        email = normalize_email(body.email)
    except ValueError:
        email = ""
    record = None
    if email:
        pool = await svc.db()
        async with pool.acquire() as conn:
            record = await user_repository.get_login(conn, email)
    # Verify even when the user is unknown, so both failures cost the same time.
    ok = await svc.passwords.verify(record.password_hash if record else None, body.password)
    if record is None or not ok:
        raise InvalidCredentials()
    issued = svc.tokens.issue(record.user)
    user = record.user
    return LoginResponse(
        token=issued.token, expiresAt=issued.expires_at,
        user=LoginUser(id=user.id, name=user.name, email=user.email, role=user.role.value),
    )


@router.get("/me", response_model=UserResponse)
async def me(principal: PrincipalDep, svc: ServicesDep) -> UserResponse:
    pool = await svc.db()
    async with pool.acquire() as conn:
        user = await user_repository.get(conn, principal.user_id)
    if user is None:
        raise Unauthorized("The token's user no longer exists")
    return user_response(user)
