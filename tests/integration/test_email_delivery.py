from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from domain.notifications import BookingSummary, NotificationType, compose
from providers.durable_files import write_each
from providers.email import (
    EmailDeliveryFailed,
    EmailRejected,
    EmailSender,
    OutboxSender,
    SmtpSender,
    SmtpTarget,
    check_smtp,
    message_id_for,
    parse_smtp_url,
    render_message,
    sender_from_settings,
)
from tests.fakes.smtp_server import SmtpSink

FROM = "TicketFlow <tickets@ticketflow.dev>"
KEY = "notif_01HZ7GHIJKMNPQRSTVWXYZ0123"
PASSWORD = "s3cr3t p@ss:w/rd%"

SUMMARY = BookingSummary(
    booking_id="bkg_01HZ3ABCDEFGHJKMNPQRSTVWXY",
    user_name="Ada Lovelace",
    user_email="ada@example.com",
    event_name="Coldplay <Live>",
    event_starts_at=datetime(2030, 6, 15, 19, 30, tzinfo=UTC),
    venue_name="O2 Arena, London",
    seat_ids=("seat_A1", "seat_A2"),
    amount=15000,
    currency="GBP",
)
CONFIRMATION = compose(NotificationType.BOOKING_CONFIRMED, SUMMARY)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


def parts_of(message: EmailMessage) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in message.iter_parts()}


async def test_confirmation_reaches_the_recipient_with_text_and_html_parts(
    smtp_sink: SmtpSink,
) -> None:
    sender = SmtpSender(smtp_sink.url, FROM, timeout=5.0)

    await sender.send(CONFIRMATION, message_id_key=KEY)

    [mail] = smtp_sink.received
    assert mail.rcpt_tos == ("ada@example.com",)
    assert mail.mail_from == "tickets@ticketflow.dev"
    message = mail.message
    assert message["Subject"] == "Your booking is confirmed!"
    assert message["From"] == FROM
    assert message["To"] == "ada@example.com"
    assert message["Date"]
    assert message["Message-ID"] == f"<{KEY}@ticketflow.dev>"
    assert message.get_content_type() == "multipart/alternative"
    parts = parts_of(message)
    assert set(parts) == {"text/plain", "text/html"}
    assert "Coldplay <Live>" in parts["text/plain"]
    assert "GBP 150.00" in parts["text/plain"]
    assert "Coldplay &lt;Live&gt;" in parts["text/html"]
    assert "bkg_01HZ3ABCDEFGHJKMNPQRSTVWXY" in parts["text/html"]


async def test_retried_send_carries_the_same_message_id(smtp_sink: SmtpSink) -> None:
    sender = SmtpSender(smtp_sink.url, FROM, timeout=5.0)

    await sender.send(CONFIRMATION, message_id_key=KEY)
    await sender.send(CONFIRMATION, message_id_key=KEY)
    await sender.send(CONFIRMATION, message_id_key="notif_other")

    ids = [m["Message-ID"] for m in smtp_sink.messages]
    assert ids[0] == ids[1]
    assert ids[2] != ids[0]


async def test_sink_collects_messages_for_waiting_tests(smtp_sink: SmtpSink) -> None:
    sender = SmtpSender(smtp_sink.url, FROM, timeout=5.0)
    await sender.send(CONFIRMATION, message_id_key=KEY)

    [message] = await smtp_sink.wait_for_messages(1, timeout=1.0)

    assert message["X-RcptTo"] == "ada@example.com"
    assert message["X-MailFrom"] == "tickets@ticketflow.dev"


async def test_send_logs_in_with_url_decoded_credentials() -> None:
    with SmtpSink(credentials=("mailer@ticketflow.dev", PASSWORD)) as sink:
        url = sink.url_with_credentials("mailer@ticketflow.dev", PASSWORD)
        sender = SmtpSender(url, FROM, timeout=5.0)

        await sender.send(CONFIRMATION, message_id_key=KEY)

        assert len(sink.messages) == 1


async def test_wrong_password_fails_without_revealing_it() -> None:
    with SmtpSink(credentials=("mailer", "right-password")) as sink:
        sender = SmtpSender(sink.url_with_credentials("mailer", PASSWORD), FROM, timeout=5.0)

        with pytest.raises(EmailDeliveryFailed) as caught:
            await sender.send(CONFIRMATION, message_id_key=KEY)

        assert not isinstance(caught.value, EmailRejected)
        assert PASSWORD not in str(caught.value)
        assert "s3cr3t" not in str(caught.value)
        assert sink.messages == []


async def test_sink_with_credentials_refuses_anonymous_senders() -> None:
    with SmtpSink(credentials=("mailer", "right-password")) as sink:
        sender = SmtpSender(sink.url, FROM, timeout=5.0)

        with pytest.raises(EmailDeliveryFailed):
            await sender.send(CONFIRMATION, message_id_key=KEY)

        assert sink.messages == []


async def test_stopped_server_raises_email_delivery_failed(smtp_sink: SmtpSink) -> None:
    url = smtp_sink.url_with_credentials("mailer", PASSWORD)
    smtp_sink.stop()
    sender = SmtpSender(url, FROM, timeout=2.0)

    with pytest.raises(EmailDeliveryFailed) as caught:
        await sender.send(CONFIRMATION, message_id_key=KEY)

    assert f"127.0.0.1:{smtp_sink.port}" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)
    assert "s3cr3t" not in repr(sender.target)


async def test_sink_restarts_on_the_same_port_and_delivery_resumes(smtp_sink: SmtpSink) -> None:
    sender = SmtpSender(smtp_sink.url, FROM, timeout=2.0)
    smtp_sink.stop()
    with pytest.raises(EmailDeliveryFailed):
        await sender.send(CONFIRMATION, message_id_key=KEY)

    smtp_sink.start()
    await sender.send(CONFIRMATION, message_id_key=KEY)

    assert len(smtp_sink.messages) == 1


async def test_temporary_refusal_is_retryable(smtp_sink: SmtpSink) -> None:
    smtp_sink.reject_next(1, "451 4.3.0 Try again later")
    sender = SmtpSender(smtp_sink.url, FROM, timeout=5.0)

    with pytest.raises(EmailDeliveryFailed) as caught:
        await sender.send(CONFIRMATION, message_id_key=KEY)
    assert not isinstance(caught.value, EmailRejected)

    await sender.send(CONFIRMATION, message_id_key=KEY)
    assert len(smtp_sink.messages) == 1


async def test_permanent_refusal_is_email_rejected(smtp_sink: SmtpSink) -> None:
    smtp_sink.reject_next(1, "554 5.7.1 Message rejected")
    sender = SmtpSender(smtp_sink.url, FROM, timeout=5.0)

    with pytest.raises(EmailRejected):
        await sender.send(CONFIRMATION, message_id_key=KEY)


async def test_a_batch_goes_over_one_session_and_a_refused_message_fails_alone(
    smtp_sink: SmtpSink,
) -> None:
    sender = SmtpSender(smtp_sink.url, FROM, timeout=5.0)
    keys = [f"notif_batch{i}" for i in range(4)]
    smtp_sink.reject_next(1, "554 5.7.1 Message rejected")

    results = await sender.send_many([(CONFIRMATION, key) for key in keys])

    assert isinstance(results[0], EmailRejected) and results[1:] == [None, None, None]
    received = smtp_sink.received
    assert [m.message["Message-ID"] for m in received] == [
        message_id_for(k, FROM) for k in keys[1:]
    ]
    assert len({m.peer for m in received}) == 1  # one connection carried the whole batch
    assert await sender.send_many([]) == []


async def test_a_batch_to_a_stopped_server_fails_every_message_retryably(
    smtp_sink: SmtpSink,
) -> None:
    sender = SmtpSender(smtp_sink.url, FROM, timeout=2.0)
    smtp_sink.stop()

    results = await sender.send_many([(CONFIRMATION, f"notif_down{i}") for i in range(3)])

    assert len(results) == 3
    assert all(
        isinstance(r, EmailDeliveryFailed) and not isinstance(r, EmailRejected) for r in results
    )


async def test_check_smtp_reports_reachable_down_and_disabled(smtp_sink: SmtpSink) -> None:
    assert await check_smtp(smtp_sink.url, timeout=2.0) == "reachable"
    assert await check_smtp(None) == "disabled"
    assert await check_smtp("") == "disabled"

    smtp_sink.stop()

    assert await check_smtp(smtp_sink.url, timeout=2.0) == "down"
    assert await check_smtp("http://example.com") == "down"
    # The probe itself sends no mail.
    assert smtp_sink.messages == []


async def test_outbox_writes_a_parseable_eml_into_a_new_directory(tmp_path: Path) -> None:
    outbox = tmp_path / "state" / "outbox"
    sender = OutboxSender(outbox, FROM)

    await sender.send(CONFIRMATION, message_id_key=KEY)

    path = outbox / f"{KEY}.eml"
    assert [p.name for p in outbox.iterdir()] == [path.name]
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Your booking is confirmed!"
    assert message["Message-ID"] == f"<{KEY}@ticketflow.dev>"
    assert set(parts_of(message)) == {"text/plain", "text/html"}


async def test_outbox_is_idempotent_per_key(tmp_path: Path) -> None:
    sender = OutboxSender(tmp_path, FROM)
    await sender.send(CONFIRMATION, message_id_key=KEY)
    first = (tmp_path / f"{KEY}.eml").read_bytes()

    cancelled = compose(NotificationType.BOOKING_CANCELLED, SUMMARY)
    await sender.send(cancelled, message_id_key=KEY)

    assert (tmp_path / f"{KEY}.eml").read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == [f"{KEY}.eml"]


async def test_outbox_refuses_keys_that_would_escape_the_directory(tmp_path: Path) -> None:
    sender = OutboxSender(tmp_path / "outbox", FROM)
    for key in ("../evil", "a/b", ".hidden", ""):
        with pytest.raises(ValueError):
            await sender.send(CONFIRMATION, message_id_key=key)
    assert not (tmp_path / "evil.eml").exists()


async def test_outbox_write_failure_is_email_delivery_failed(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sender = OutboxSender(blocker / "outbox", FROM)

    with pytest.raises(EmailDeliveryFailed):
        await sender.send(CONFIRMATION, message_id_key=KEY)


async def test_outbox_writes_a_batch_in_one_go_and_reports_each_email(tmp_path: Path) -> None:
    sender = OutboxSender(tmp_path, FROM)
    keys = [f"notif_out{i}" for i in range(3)]
    assert await sender.send_many([(CONFIRMATION, key) for key in keys]) == [None, None, None]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}.eml" for key in keys]

    blocked = OutboxSender(tmp_path / f"{keys[0]}.eml" / "outbox", FROM)
    results = await blocked.send_many([(CONFIRMATION, key) for key in keys])
    assert all(isinstance(r, EmailDeliveryFailed) for r in results)


def test_message_id_is_stable_and_header_safe_for_any_key() -> None:
    odd = message_id_for("bkg_01:CONFIRMED attempt", FROM)
    assert odd == message_id_for("bkg_01:CONFIRMED attempt", FROM)
    assert odd != message_id_for("bkg_01.CONFIRMED.attempt", FROM)
    assert odd.startswith("<bkg_01.CONFIRMED.attempt.")
    assert odd.endswith("@ticketflow.dev>")
    assert message_id_for("k", "no-domain") == "<k@ticketflow.local>"


async def test_header_injection_is_refused() -> None:
    evil = compose(
        NotificationType.BOOKING_CONFIRMED,
        BookingSummary(**{**SUMMARY.__dict__, "user_email": "a@b.c\r\nBcc: x@y.z"}),
    )
    sender = SmtpSender("smtp://127.0.0.1:1", FROM, timeout=1.0)
    with pytest.raises(EmailRejected):
        await sender.send(evil, message_id_key=KEY)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", SmtpTarget("mail.example.com", 25, False, False)),
        ("smtp://127.0.0.1:2525", SmtpTarget("127.0.0.1", 2525, False, False)),
        ("smtps://mail.example.com", SmtpTarget("mail.example.com", 465, True, False)),
        ("smtp+starttls://mail.example.com", SmtpTarget("mail.example.com", 587, False, True)),
        (
            "SMTP+STARTTLS://Mail.Example.com:2587",
            SmtpTarget("mail.example.com", 2587, False, True),
        ),
        (
            "smtps://apikey:p%40ss%3Aw%2Frd@smtp.sendgrid.net:465",
            SmtpTarget("smtp.sendgrid.net", 465, True, False, "apikey", "p@ss:w/rd"),
        ),
        (
            "smtp://user%40example.com@[::1]:25",
            SmtpTarget("::1", 25, False, False, "user@example.com", None),
        ),
        ("smtp://user:@host", SmtpTarget("host", 25, False, False, "user", "")),
    ],
)
def test_parse_smtp_url(url: str, expected: SmtpTarget) -> None:
    assert parse_smtp_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example.com",
        "mailto:ada@example.com",
        "smtp://",
        "smtp://host:notaport",
        "smtp://host:70000",
        "mail.example.com:25",
    ],
)
def test_parse_smtp_url_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_smtp_url(url)


def test_parse_error_does_not_echo_the_password() -> None:
    with pytest.raises(ValueError) as caught:
        parse_smtp_url("ftp://user:hunter2@host")
    assert "hunter2" not in str(caught.value)


def test_sender_from_settings_picks_smtp_when_a_url_is_set(tmp_path: Path) -> None:
    smtp = sender_from_settings(
        smtp_url="smtp://mail:2525", smtp_from=FROM, timeout=3.0, outbox_dir=tmp_path
    )
    outbox = sender_from_settings(smtp_url=None, smtp_from=FROM, timeout=3.0, outbox_dir=tmp_path)
    empty = sender_from_settings(smtp_url="", smtp_from=FROM, timeout=3.0, outbox_dir=tmp_path)

    assert isinstance(smtp, SmtpSender)
    assert smtp.target == SmtpTarget("mail", 2525, False, False)
    assert isinstance(outbox, OutboxSender)
    assert outbox.directory == tmp_path
    assert isinstance(empty, OutboxSender)
    both: list[EmailSender] = [smtp, outbox]
    assert len(both) == 2
    with pytest.raises(ValueError):
        sender_from_settings(smtp_url="imap://x", smtp_from=FROM, timeout=3.0, outbox_dir=tmp_path)


def test_non_ascii_names_and_bodies_round_trip_in_seven_bit_lines() -> None:
    summary = BookingSummary(
        **{
            **SUMMARY.__dict__,
            "user_name": "Zoë Ångström",
            "event_name": "Café Müller — 2030 " + "x" * 1200,
        }
    )
    email = compose(NotificationType.BOOKING_CONFIRMED, summary)
    email = type(email)(
        to=email.to, subject="Réservation confirmée ✓", text=email.text, html=email.html
    )
    raw = render_message(email, sender="TicketFlöw <tickets@ticketflow.dev>", message_id_key=KEY)
    assert raw.isascii()  # no 8-bit data for servers without 8BITMIME
    assert max(len(line) for line in raw.splitlines()) <= 78  # SMTP's limit is 998
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert message["Subject"] == "Réservation confirmée ✓"
    assert message["From"].addresses[0].display_name == "TicketFlöw"
    assert message["From"].addresses[0].addr_spec == "tickets@ticketflow.dev"
    assert message["To"] == "ada@example.com"
    assert message.get_body(("plain",)).get_content() == email.text
    assert message.get_body(("html",)).get_content() == email.html


@pytest.mark.parametrize("field", ["to", "subject"])
def test_a_line_break_in_any_header_is_refused(field: str) -> None:
    evil = type(CONFIRMATION)(**{**CONFIRMATION.__dict__, field: "a@b.c\nBcc: x@y.z"})
    with pytest.raises(EmailRejected, match="line break"):
        render_message(evil, sender=FROM, message_id_key=KEY)


def test_a_non_ascii_address_is_refused_not_mangled() -> None:
    # Registration accepts ASCII addresses only; an encoded-word in the local part would be a wrong address.
    odd = type(CONFIRMATION)(**{**CONFIRMATION.__dict__, "to": "zoë@example.com"})
    with pytest.raises(EmailRejected, match="non-ASCII address"):
        render_message(odd, sender=FROM, message_id_key=KEY)


def test_a_body_quoting_the_boundary_cannot_end_its_part_early() -> None:
    rendered = render_message(CONFIRMATION, sender=FROM, message_id_key=KEY)
    boundary = rendered.split(b'boundary="', 1)[1].split(b'"', 1)[0].decode()
    sly = type(CONFIRMATION)(
        **{**CONFIRMATION.__dict__, "text": f"before\n--{boundary}--\nafter\n"}
    )
    message = BytesParser(policy=policy.default).parsebytes(
        render_message(sly, sender=FROM, message_id_key=KEY)
    )
    assert message.get_body(("plain",)).get_content() == sly.text
    assert message.get_body(("html",)).get_content() == sly.html


async def test_an_outbox_batch_keeps_existing_files_and_writes_new_ones(tmp_path: Path) -> None:
    sender = OutboxSender(tmp_path, FROM)
    await sender.send(CONFIRMATION, message_id_key="notif_old")
    first = (tmp_path / "notif_old.eml").read_bytes()

    results = await sender.send_many([(CONFIRMATION, "notif_old"), (CONFIRMATION, "notif_new")])

    assert results == [None, None]
    assert (tmp_path / "notif_old.eml").read_bytes() == first
    parsed = BytesParser(policy=policy.default).parsebytes(
        (tmp_path / "notif_new.eml").read_bytes()
    )
    assert parsed["Message-ID"] == message_id_for("notif_new", FROM)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notif_new.eml", "notif_old.eml"]


def test_durable_writes_fail_one_file_alone_and_leave_no_temporary_file(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    good, bad, also = tmp_path / "a" / "1.eml", blocker / "sub" / "2.eml", tmp_path / "a" / "3.eml"

    outcomes = write_each([(good, b"one"), (bad, b"two"), (also, b"three")])

    assert outcomes[0] is True and outcomes[2] is True and isinstance(outcomes[1], OSError)
    assert good.read_bytes() == b"one" and also.read_bytes() == b"three"
    assert write_each([(good, b"again")]) == [False] and good.read_bytes() == b"one"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["1.eml", "3.eml"]
