"""A real SMTP server for tests (aiosmtpd), collecting what it receives.

Usage::

    sink = SmtpSink()
    sink.start()
    try:
        ...  # send to sink.url
        [message] = sink.messages
    finally:
        sink.stop()

The server runs in its own thread and event loop, so it serves async tests, sync
tests and other processes (Ray actors) alike.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from supervision.ports import free_port
from tests.waiting import wait_until


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    peer: tuple[str, int] | None = None  # the client's address: one per SMTP session


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return self._sink._receive(session, envelope)


class SmtpSink:
    """An SMTP server on 127.0.0.1 that keeps every message it accepts.

    Args:
        credentials: If given, AUTH (PLAIN/LOGIN over plain text) is required and only
            this (user, password) pair is accepted.
    """

    def __init__(self, *, credentials: tuple[str, str] | None = None) -> None:
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._credentials = credentials
        self._controller: Controller | None = None
        self._received: list[ReceivedMail] = []
        self._rejections: list[str] = []
        self._changed = threading.Condition()

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("start() the sink first")
        return f"smtp://{self.host}:{self.port}"

    def url_with_credentials(self, user: str, password: str) -> str:
        return f"smtp://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> SmtpSink:
        """Starts listening; after a stop() it comes back on the same port."""
        if self._controller is not None:
            return self
        attempts = 1 if self.port is not None else 5
        for attempt in range(attempts):
            port = self.port if self.port is not None else free_port()
            controller = self._make_controller(port)
            try:
                controller.start()
            except OSError:
                # Another process took the port between free_port() and the bind.
                if attempt == attempts - 1:
                    raise
                continue
            self._controller = controller
            self.port = port
            return self
        raise RuntimeError("unreachable")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def received(self) -> list[ReceivedMail]:
        with self._changed:
            return list(self._received)

    @property
    def messages(self) -> list[EmailMessage]:
        """Parsed messages, each with aiosmtpd's X-MailFrom / X-RcptTo envelope headers."""
        return [mail.message for mail in self.received]

    def clear(self) -> None:
        with self._changed:
            self._received.clear()
            self._rejections.clear()

    def reject_next(self, count: int = 1, reply: str = "451 4.3.0 Try again later") -> None:
        """Answers the next `count` DATA commands with `reply` instead of accepting them."""
        with self._changed:
            self._rejections.extend([reply] * count)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[EmailMessage]:
        """Blocks until at least `count` messages arrived (for sync tests; blocks the loop)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._received) >= count, timeout):
                raise TimeoutError(f"{len(self._received)} of {count} messages in {timeout}s")
            return [mail.message for mail in self._received]

    async def wait_for_messages(self, count: int, timeout: float = 5.0) -> list[EmailMessage]:
        """Like wait_for, but yields to the event loop so an in-process sender can run."""
        messages = await wait_until(
            lambda: self.messages,
            until=lambda messages: len(messages) >= count,
            timeout=timeout,
            interval=0.02,
            what=f"{count} messages at the SMTP sink",
        )
        return list(messages)

    def _make_controller(self, port: int) -> Controller:
        options: dict[str, Any] = {}
        if self._credentials is not None:
            options = {
                "authenticator": self._authenticate,
                # Enforced in _receive instead: aiosmtpd's auth_required without TLS
                # warns on every connection, which is noise on a loopback test server.
                "auth_required": False,
                "auth_require_tls": False,
            }
        return Controller(_Handler(self), hostname=self.host, port=port, **options)

    def _authenticate(
        self,
        server: Any,
        session: Any,
        envelope: Any,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self._credentials is None:
            return AuthResult(success=False, handled=False)
        user, password = self._credentials
        ok = auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok, handled=False)

    def _receive(self, session: Any, envelope: Any) -> str:
        if self._credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        with self._changed:
            if self._rejections:
                return self._rejections.pop(0)
        raw: bytes = envelope.original_content or envelope.content
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        message["X-MailFrom"] = envelope.mail_from
        message["X-RcptTo"] = ", ".join(envelope.rcpt_tos)
        mail = ReceivedMail(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            message=message,
            peer=tuple(session.peer) if session.peer else None,
        )
        with self._changed:
            self._received.append(mail)
            self._changed.notify_all()
        return "250 Message accepted for delivery"
