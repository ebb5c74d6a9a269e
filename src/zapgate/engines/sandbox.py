"""The sandbox engine: a simulated WhatsApp network, for bots and tests that need no phone and no internet.

Sessions on the sandbox behave like linked devices:

- a new session shows rotating, expiring QR codes until a simulated phone "scans" one (`scan` mail naming the
  phone number), or shows a pairing code that the simulated phone "types" (`enter_code` mail);
- linked sessions message each other through the network, also across workers, and get `delivered` then
  `read` receipts; a number that no sandbox session has linked is a simulated phone that reads at once;
- anyone can inject an inbound message from any number, and faults: drop the connection, log out from the
  phone, reject the next send.

The network is a `SandboxNetwork`: mailboxes addressed to a phone (`phone:5511…`) or to a session
(`session:client/session`). `LocalSandboxNetwork` keeps them in memory (one process); the worker uses one
backed by PostgreSQL, so that mail waits, like WhatsApp's servers keep it, until the addressee is online.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol

from zapgate.domain.phones import GROUP_SERVER, USER_SERVER, jid_user
from zapgate.domain.records import MessageStatus
from zapgate.domain.sessions import SessionStatus
from zapgate.engines.base import (
    EngineError,
    EngineFailure,
    EventSink,
    InboundMessage,
    JidLookup,
    NotConnected,
    PairingCode,
    Presence,
    QrCode,
    Receipt,
    SendRejected,
    SendResult,
    SessionRef,
    StartMode,
    StartRequest,
    StatusChanged,
    UnknownSession,
)
from zapgate.errors import InvalidRequest
from zapgate.log import get_logger

log = get_logger(__name__)

Mail = dict[str, Any]

RECONNECT_DELAY = 0.05  # seconds the sandbox takes to reconnect after a dropped connection
MAIL_POLL_INTERVAL = 1.0  # seconds between mailbox checks when no wake-up arrives


def phone_address(phone: str) -> str:
    """The mailbox of a phone number."""
    return f"phone:{phone}"


def session_address(ref: SessionRef) -> str:
    """The mailbox of a session (control mail: scans, codes, faults, injected messages)."""
    return f"session:{ref.client_id}/{ref.session_id}"


class PhoneInUse(EngineError):
    """The simulated phone is linked to another session already."""

    code = "phone_in_use"
    retryable = False


class SandboxNetwork(Protocol):
    """Mailboxes and the phone directory of the simulated network."""

    async def link(self, phone: str, ref: SessionRef) -> None:
        """Record that `phone` is linked to `ref`; raise EngineError if another session has it."""

    async def unlink(self, phone: str, ref: SessionRef) -> None:
        """Forget the link of `phone` to `ref` (no-op if it is not theirs)."""

    async def linked_session(self, phone: str) -> SessionRef | None:
        """Return the session `phone` is linked to, if any."""

    async def post(self, address: str, mail: Mail) -> None:
        """Leave `mail` in the mailbox at `address`."""

    async def collect(self, addresses: Collection[str]) -> list[tuple[int, str, Mail]]:
        """Hand out the waiting mail of `addresses`, oldest first, as (mail id, address, mail).

        Mail handed out stays in the mailbox until acknowledged; unacknowledged mail is handed out again
        after a while (its taker may have died before storing what it carried).
        """

    async def ack(self, mail_ids: Collection[int]) -> None:
        """Delete mail that has been dealt with."""

    async def wait_for_mail(self, at_most: float) -> None:
        """Return when mail may have arrived, or after `at_most` seconds."""


class LocalSandboxNetwork:
    """The sandbox network inside one process."""

    def __init__(self) -> None:
        self._links: dict[str, SessionRef] = {}
        self._boxes: dict[str, deque[tuple[int, Mail]]] = {}
        self._arrived = asyncio.Event()
        self._ids = itertools.count(1)
        self.unacknowledged: dict[int, Mail] = {}

    async def link(self, phone: str, ref: SessionRef) -> None:
        current = self._links.get(phone)
        if current is not None and current != ref:
            raise PhoneInUse(f"sandbox phone {phone} is already linked to another session")
        self._links[phone] = ref

    async def unlink(self, phone: str, ref: SessionRef) -> None:
        if self._links.get(phone) == ref:
            del self._links[phone]

    async def linked_session(self, phone: str) -> SessionRef | None:
        return self._links.get(phone)

    async def post(self, address: str, mail: Mail) -> None:
        self._boxes.setdefault(address, deque()).append((next(self._ids), mail))
        self._arrived.set()

    async def collect(self, addresses: Collection[str]) -> list[tuple[int, str, Mail]]:
        taken: list[tuple[int, str, Mail]] = []
        for address in addresses:
            box = self._boxes.pop(address, None)
            if box:
                taken.extend((mail_id, address, mail) for mail_id, mail in box)
        self.unacknowledged.update((mail_id, mail) for mail_id, _, mail in taken)
        return sorted(taken, key=lambda item: item[0])

    async def ack(self, mail_ids: Collection[int]) -> None:
        for mail_id in mail_ids:
            self.unacknowledged.pop(mail_id, None)

    async def wait_for_mail(self, at_most: float) -> None:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation (the pump's, at close)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._arrived.wait()
        self._arrived.clear()


@dataclass
class _Session:
    request: StartRequest
    status: SessionStatus = SessionStatus.CREATED
    phone: str | None = None
    pairing_code: str | None = None
    reject_next_send: bool = False
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def ref(self) -> SessionRef:
        return self.request.ref


class SandboxEngine:
    """Host sandbox sessions in this worker."""

    name: ClassVar[str] = "sandbox"

    def __init__(self, on_event: EventSink, network: SandboxNetwork, *, reconnect_delay: float = RECONNECT_DELAY):
        self._emit = on_event
        self._network = network
        self._reconnect_delay = reconnect_delay
        self._sessions: dict[SessionRef, _Session] = {}
        self._pump: asyncio.Task[None] | None = None
        self._acks: set[asyncio.Task[None]] = set()

    # -- the Engine protocol ------------------------------------------------------------------------------

    async def start(self, request: StartRequest) -> None:
        ref = request.ref
        if ref in self._sessions:
            await self.stop(ref)
        session = self._sessions[ref] = _Session(request)
        self._ensure_pump()
        self._set_status(session, SessionStatus.CONNECTING)
        if request.mode is StartMode.RESTORE:
            phone = jid_user(request.jid) if request.jid else None
            if phone is not None and await self._network.linked_session(phone) == ref:
                self._connected(session, phone)
            else:
                self._set_status(session, SessionStatus.LOGGED_OUT, "the simulated phone unlinked this session")
                self._sessions.pop(ref, None)
            return
        if request.mode is StartMode.PAIRING_CODE:
            if not request.phone_number:
                raise InvalidRequest("a pairing code needs the phone number to link")
            await self.request_pairing_code(ref, request.phone_number)
            return
        self._spawn(session, self._show_qr_codes(session))

    async def stop(self, ref: SessionRef) -> None:
        session = self._sessions.pop(ref, None)
        if session is None:
            return
        for task in list(session.tasks):
            task.cancel()

    async def logout(self, ref: SessionRef) -> None:
        session = self._sessions.pop(ref, None)
        if session is None:
            raise UnknownSession(f"session {ref} is not hosted here")
        for task in list(session.tasks):
            task.cancel()
        if session.phone is not None:
            await self._network.unlink(session.phone, ref)
        self._set_status(session, SessionStatus.LOGGED_OUT, "logged out")

    async def send_text(self, ref: SessionRef, to: str, text: str, message_id: str) -> SendResult:
        session = self._hosted(ref)
        if session.status is not SessionStatus.CONNECTED or session.phone is None:
            raise NotConnected(f"session {ref} is {session.status.value}, not connected")
        if session.reject_next_send:
            session.reject_next_send = False
            raise SendRejected("the sandbox rejected this send (injected fault)")
        now = datetime.now(UTC)
        recipient = jid_user(to)
        mail: Mail = {
            "kind": "message",
            "id": message_id,
            "from": session.phone,
            "to": recipient,
            "text": text,
            "group": to.endswith("@" + GROUP_SERVER),
            "timestamp": now.isoformat(),
        }
        if await self._network.linked_session(recipient) is not None:
            await self._network.post(phone_address(recipient), mail)
        else:
            # nobody on the sandbox has this number: a simulated phone receives and reads it at once
            self._spawn(session, self._external_phone_reads(session, message_id, to))
        return SendResult(message_id=message_id, timestamp=now)

    async def resolve(self, ref: SessionRef, phone_number: str) -> JidLookup:
        self._hosted(ref)
        linked = await self._network.linked_session(phone_number)
        # every number exists on the sandbox (unlinked ones are simulated phones)
        return JidLookup(
            phone_number=phone_number,
            on_whatsapp=True,
            jid=f"{phone_number}@{USER_SERVER}",
            extra={"sandbox": "linked" if linked else "simulated"},
        )

    async def request_pairing_code(self, ref: SessionRef, phone_number: str) -> str:
        session = self._hosted(ref)
        if session.status not in {SessionStatus.CONNECTING, SessionStatus.QR, SessionStatus.PAIRING}:
            raise EngineError(f"session {ref} is {session.status.value}: a pairing code is for a new pairing")
        for task in list(session.tasks):
            task.cancel()  # the QR codes stop once a code is asked for
        code = _pairing_code(ref, phone_number)
        session.pairing_code = code
        session.request = StartRequest(
            ref=ref,
            mode=StartMode.PAIRING_CODE,
            phone_number=phone_number,
            qr_timeout=session.request.qr_timeout,
            max_qr_codes=session.request.max_qr_codes,
        )
        self._set_status(session, SessionStatus.PAIRING)
        self._emit(PairingCode(ref=ref, code=code, phone_number=phone_number))
        self._spawn(session, self._expire_pairing(session))
        return code

    async def send_presence(self, ref: SessionRef, to: str, presence: Presence) -> None:
        session = self._hosted(ref)
        if session.status is not SessionStatus.CONNECTED:
            raise NotConnected(f"session {ref} is {session.status.value}, not connected")

    def hosts(self, ref: SessionRef) -> bool:
        return ref in self._sessions

    def abandon(self, ref: SessionRef) -> None:
        session = self._sessions.pop(ref, None)
        if session is not None:
            for task in list(session.tasks):
                task.cancel()

    async def close(self) -> None:
        for ref in list(self._sessions):
            await self.stop(ref)
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None

    # -- the simulated network ----------------------------------------------------------------------------

    def _ensure_pump(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._pump_mail(), name="sandbox.mail")

    async def _pump_mail(self) -> None:
        while True:
            addresses = []
            for session in self._sessions.values():
                addresses.append(session_address(session.ref))
                if session.phone is not None and session.status is SessionStatus.CONNECTED:
                    addresses.append(phone_address(session.phone))
            try:
                for mail_id, address, mail in await self._network.collect(addresses) if addresses else []:
                    await self._deliver(mail_id, address, mail)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the network (database) may be briefly away: try again later
                log.warning("sandbox.mail_failed", error=repr(exc))
            await self._network.wait_for_mail(MAIL_POLL_INTERVAL)

    async def _deliver(self, mail_id: int, address: str, mail: Mail) -> None:
        kind = mail.get("kind")
        session = self._addressee(address)
        if session is None:
            await self._network.post(address, mail)  # not ours (any more): leave it for whoever hosts it
            await self._network.ack([mail_id])
            return
        if kind == "message":
            await self._receive(session, mail, self._acker(mail_id))
            return
        if kind == "receipt":
            self._emit(
                Receipt(
                    ref=session.ref,
                    message_ids=tuple(mail["ids"]),
                    status=MessageStatus(mail["status"]),
                    chat_jid=f"{mail['from']}@{USER_SERVER}",
                    timestamp=datetime.fromisoformat(mail["timestamp"]),
                    ack=self._acker(mail_id),
                )
            )
            return
        await self._control(session, kind, mail)
        await self._network.ack([mail_id])

    def _acker(self, mail_id: int) -> Callable[[], None]:
        """Return the callback that deletes mail `mail_id` once what it carried is stored."""

        def ack() -> None:
            task = asyncio.get_running_loop().create_task(self._network.ack([mail_id]))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

        return ack

    async def _control(self, session: _Session, kind: object, mail: Mail) -> None:
        if kind == "scan":
            await self._scanned(session, str(mail["phone"]))
        elif kind == "enter_code":
            await self._code_entered(session, str(mail["code"]))
        elif kind == "fault":
            await self._fault(session, str(mail["fault"]))
        else:
            log.warning("sandbox.unknown_mail", kind=kind)

    def _addressee(self, address: str) -> _Session | None:
        for session in self._sessions.values():
            if address == session_address(session.ref) or (
                session.phone is not None and address == phone_address(session.phone)
            ):
                return session
        return None

    async def _receive(self, session: _Session, mail: Mail, ack: Callable[[], None]) -> None:
        sender = str(mail["from"])
        sender_jid = f"{sender}@{USER_SERVER}"
        self._emit(
            InboundMessage(
                ref=session.ref,
                message_id=str(mail["id"]),
                chat_jid=sender_jid,
                chat_lid=None,
                sender_jid=sender_jid,
                type="text",
                text=str(mail["text"]),
                timestamp=datetime.fromisoformat(mail["timestamp"]),
                push_name=mail.get("push_name"),
                ack=ack,
            )
        )
        if await self._network.linked_session(sender) is not None and session.phone is not None:
            # the recipient's phone gets it, then reads it: the sender hears both
            for status in (MessageStatus.DELIVERED, MessageStatus.READ):
                await self._network.post(
                    phone_address(sender),
                    {
                        "kind": "receipt",
                        "ids": [mail["id"]],
                        "status": status.value,
                        "from": session.phone,
                        "timestamp": datetime.now(UTC).isoformat(),
                    },
                )

    async def _external_phone_reads(self, session: _Session, message_id: str, chat_jid: str) -> None:
        await asyncio.sleep(0)  # after the send has returned
        for status in (MessageStatus.DELIVERED, MessageStatus.READ):
            self._emit(
                Receipt(
                    ref=session.ref,
                    message_ids=(message_id,),
                    status=status,
                    chat_jid=chat_jid,
                    timestamp=datetime.now(UTC),
                )
            )

    # -- pairing ------------------------------------------------------------------------------------------

    async def _show_qr_codes(self, session: _Session) -> None:
        request = session.request
        self._set_status(session, SessionStatus.QR)
        for sequence in range(1, request.max_qr_codes + 1):
            expires_at = datetime.now(UTC) + timedelta(seconds=request.qr_timeout)
            self._emit(
                QrCode(ref=session.ref, code=_qr_code(session.ref, sequence), expires_at=expires_at, sequence=sequence)
            )
            await asyncio.sleep(request.qr_timeout)
        self._set_status(session, SessionStatus.QR_TIMEOUT, f"no scan of {request.max_qr_codes} QR codes")
        self._sessions.pop(session.ref, None)

    async def _expire_pairing(self, session: _Session) -> None:
        request = session.request
        await asyncio.sleep(request.qr_timeout * request.max_qr_codes)
        self._set_status(session, SessionStatus.QR_TIMEOUT, "the pairing code was not entered in time")
        self._sessions.pop(session.ref, None)

    async def _scanned(self, session: _Session, phone: str) -> None:
        if session.status is not SessionStatus.QR:
            self._fail(
                session, "not_showing_qr", f"a scan needs a QR code on screen; the session is {session.status.value}"
            )
            return
        await self._link(session, phone)

    async def _code_entered(self, session: _Session, code: str) -> None:
        if session.status is not SessionStatus.PAIRING or session.request.phone_number is None:
            self._fail(session, "not_pairing", f"no pairing code is pending; the session is {session.status.value}")
            return
        if code.replace("-", "").upper() != (session.pairing_code or "").replace("-", ""):
            self._fail(session, "wrong_pairing_code", "the pairing code entered on the phone does not match")
            return
        await self._link(session, session.request.phone_number)

    async def _link(self, session: _Session, phone: str) -> None:
        try:
            await self._network.link(phone, session.ref)
        except PhoneInUse as exc:
            self._fail(session, exc.code, exc.message)
            return
        for task in list(session.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self._set_status(session, SessionStatus.CONNECTING, "paired")
        self._connected(session, phone)

    def _connected(self, session: _Session, phone: str) -> None:
        session.phone = phone
        session.pairing_code = None
        session.status = SessionStatus.CONNECTED
        self._emit(
            StatusChanged(
                ref=session.ref, status=SessionStatus.CONNECTED, jid=f"{phone}@{USER_SERVER}", phone_number=phone
            )
        )

    # -- faults -------------------------------------------------------------------------------------------

    async def _fault(self, session: _Session, fault: str) -> None:
        if fault == "reject_next_send":
            session.reject_next_send = True
        elif fault == "logout":
            if session.phone is not None:
                await self._network.unlink(session.phone, session.ref)
            for task in list(session.tasks):
                task.cancel()
            self._sessions.pop(session.ref, None)
            self._set_status(session, SessionStatus.LOGGED_OUT, "logged out from the phone")
        elif fault == "drop_connection":
            if session.status is SessionStatus.CONNECTED:
                self._set_status(session, SessionStatus.DISCONNECTED, "connection dropped (injected fault)")
                self._spawn(session, self._reconnect(session))
        else:
            self._fail(session, "unknown_fault", f"unknown fault {fault!r}")

    async def _reconnect(self, session: _Session) -> None:
        await asyncio.sleep(self._reconnect_delay)
        self._set_status(session, SessionStatus.CONNECTING, "reconnecting")
        await asyncio.sleep(self._reconnect_delay)
        if session.phone is not None:
            self._connected(session, session.phone)

    # -- helpers ------------------------------------------------------------------------------------------

    def _hosted(self, ref: SessionRef) -> _Session:
        session = self._sessions.get(ref)
        if session is None:
            raise UnknownSession(f"session {ref} is not hosted here")
        return session

    def _set_status(self, session: _Session, status: SessionStatus, reason: str | None = None) -> None:
        session.status = status
        self._emit(StatusChanged(ref=session.ref, status=status, reason=reason))

    def _fail(self, session: _Session, code: str, message: str) -> None:
        self._emit(EngineFailure(ref=session.ref, code=code, message=message))

    def _spawn(self, session: _Session, coro: Any) -> None:
        task = asyncio.create_task(coro)
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)


def _qr_code(ref: SessionRef, sequence: int) -> str:
    digest = hashlib.sha256(f"{ref}:{sequence}".encode()).hexdigest()[:32]
    return f"sandbox@{ref.client_id}/{ref.session_id},{sequence},{digest}"


def _pairing_code(ref: SessionRef, phone: str) -> str:
    digest = hashlib.sha256(f"{ref}:{phone}".encode()).hexdigest().upper()
    alphabet = "ABCDEFGHJKLMNPQRSTVWXYZ23456789"
    chars = "".join(alphabet[int(digest[i : i + 2], 16) % len(alphabet)] for i in range(0, 16, 2))
    return f"{chars[:4]}-{chars[4:]}"
