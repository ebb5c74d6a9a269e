"""Sessions as a client sees them: create, inspect, restart, log out, delete; send texts; drive the sandbox.

Every call validates its input first and changes nothing when it refuses. What a worker must act on is
written to the session's placement (desired state, mode, generation) and announced with NOTIFY; the hosting
worker does the rest and reports back through the session row and the event log. Accepting texts is the
SendIntake's job (`services/send_intake.py`): the SessionService hands sends to it, so that its callers
(HTTP, Socket.IO, the CLI) keep one object.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from zapgate.db import chats as chat_rows
from zapgate.db import keystore, notify, placements
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.chats import SeenPresence
from zapgate.domain.content import GroupInvite, Media, Outgoing
from zapgate.domain.events import EventType, status_change_payload
from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.ids import new_message_id
from zapgate.domain.ids import session_id as valid_session_id
from zapgate.domain.injection import parse_injected
from zapgate.domain.phones import GROUP_SERVER, LID_SERVER, USER_SERVER, mask, parse_recipient
from zapgate.domain.records import Session
from zapgate.domain.sends import message_text
from zapgate.domain.sessions import SessionStatus, restart_mode
from zapgate.engines import registry
from zapgate.engines.base import SessionRef
from zapgate.engines.sandbox import SANDBOX_FAULTS, STATUS_BROADCAST, session_address
from zapgate.errors import DuplicateRecord, EngineNotAllowed, InvalidRequest, SessionNotConnected, SessionNotFound
from zapgate.log import get_logger
from zapgate.services.media import MediaFiles
from zapgate.services.quotas import QuotaService
from zapgate.services.sandbox import InboundFile, PostgresSandboxNetwork
from zapgate.services.sandbox_inbound import injected_mail
from zapgate.services.send_intake import SendAccepted, SendIntake

log = get_logger(__name__)
InviteFiller = Callable[[str, str, GroupInvite], Awaitable[GroupInvite]]  # (client, session, invite to send)

SANDBOX_NOTICES = ("undecryptable", "history_sync")
MAX_TRANSIENT_FAILURES = 100  # sends a fail_transient fault may fail
_LID = re.compile(r"([0-9]{5,20})(@lid)?", re.ASCII)


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session with where it runs."""

    session: Session
    desired: str
    worker_id: str | None


class SessionService:
    """The services-level API of sessions, used by the HTTP API, Socket.IO and the CLI."""

    def __init__(
        self,
        manager: ConnectionManager,
        *,
        default_engine: str = "whatsmeow",
        send_rate: float = 0.0,
        send_burst: int = 1,
        coalesce_wakeups: bool = False,
        quotas: QuotaService | None = None,
        media: MediaFiles | None = None,
        invites: InviteFiller | None = None,
    ) -> None:
        self._manager = manager
        self._media = media
        self._invites = invites  # completes an invite message to send (GroupService.invite_message)
        self._default_engine = default_engine
        self._quotas = quotas or QuotaService(manager)
        self._sends = SendIntake(manager, send_rate=send_rate, send_burst=send_burst, coalesce_wakeups=coalesce_wakeups)
        self._sandbox = PostgresSandboxNetwork(manager)

    # -- lifecycle ------------------------------------------------------------------------------------

    async def create(
        self, client: str, session: str, *, engine: str | None = None, phone_number: str | None = None
    ) -> Session:
        """Create a session and ask a worker to start it: by QR code, or by pairing code for `phone_number`."""
        cid, sid = valid_client_id(client), valid_session_id(session)
        engine = engine or self._default_engine
        self._quotas.check_offered(engine)
        pairing_phone = None
        if phone_number is not None:
            recipient = parse_recipient(phone_number, field="phoneNumber")
            if recipient.phone is None:
                raise InvalidRequest("phoneNumber: a phone number with country code is expected, not a JID")
            pairing_phone = recipient.phone

        async def work(tx: Transaction) -> Session:
            if await tx.session.find_unique(sid) is not None:
                raise DuplicateRecord(f"session {sid!r} already exists", session_id=sid)
            await self._quotas.admit_session(tx, cid, engine)
            created = await tx.session.create(session_id=sid, client_id=cid, status="created", engine=engine)
            mode = "pairing_code" if pairing_phone else "qr"
            await placements.insert(tx.connection, cid, sid, engine, mode, pairing_phone, created.status)
            await _event(tx, sid, EventType.STATUS_CHANGE, {"status": "created", "engine": engine})
            await notify.notify(tx.connection, notify.PLACEMENTS, f"{cid}/{sid}")
            return created

        created = await self._manager.execute_transaction(cid, work)
        log.info("session.created", client_id=cid, session_id=sid, engine=engine, pairing=mask(pairing_phone))
        return created

    async def get(self, client: str, session: str) -> SessionView:
        """Return one session; raise SessionNotFound."""
        cid, sid = valid_client_id(client), valid_session_id(session)

        async def work(tx: Transaction) -> SessionView:
            found = await tx.session.find_unique(sid)
            if found is None:
                raise SessionNotFound(f"session {sid!r} not found", session_id=sid)
            placement = await placements.get(tx.connection, cid, sid)
            if placement is None:
                return SessionView(found, "stopped", None)
            return SessionView(found, placement.desired, placement.worker_id)

        return await self._manager.execute_transaction(cid, work)

    async def list(self, client: str) -> list[Session]:
        """Return the client's sessions, oldest first."""
        handle = await self._manager.get_connection(valid_client_id(client))
        return await handle.session.find_many()

    async def restart(self, client: str, session: str) -> SessionView:
        """Start the session again: restored from its keys when linked, else a new pairing by QR code."""
        return await self._want(client, session, desired="running", restart=True)

    async def stop(self, client: str, session: str) -> SessionView:
        """Disconnect the session, keeping its keys."""
        return await self._want(client, session, desired="stopped")

    async def logout(self, client: str, session: str) -> SessionView:
        """Unlink the session from the phone and delete its keys (final; a restart pairs anew).

        The hosting worker does it; a session no live worker hosts is logged out here and now.
        """
        view = await self._want(client, session, desired="logged_out")
        cid, sid = valid_client_id(client), valid_session_id(session)
        async with self._manager.registry_transaction() as conn:
            placement = await placements.get(conn, cid, sid)
            hosted = (
                placement is not None
                and placement.worker_id is not None
                and await placements.lease_alive(conn, cid, sid)
            )
        if not hosted:
            await self._logout_unhosted(cid, sid, view.session)
            view = await self.get(cid, sid)
        return view

    async def _logout_unhosted(self, cid: str, sid: str, session: Session) -> None:
        ref = SessionRef(cid, sid)
        if registry.simulated(session.engine) and session.phone_number:
            await self._sandbox.unlink(session.phone_number, ref)
        elif registry.uses_keystore(session.engine) and session.jid:
            async with self._manager.registry_transaction() as conn:
                await keystore.forget_device(conn, cid, session.jid)

        async def work(tx: Transaction) -> None:
            current = await tx.session.find_unique(sid)
            if current is None or current.status == SessionStatus.LOGGED_OUT:
                return
            await tx.session.update(
                sid,
                status=SessionStatus.LOGGED_OUT.value,
                jid=None,
                pairing_code=None,
                qr_code=None,
                qr_expires_at=None,
            )
            payload = status_change_payload("logged_out", current.status, "logged out")
            await _event(tx, sid, EventType.STATUS_CHANGE, {**payload, "engine": current.engine})
            await placements.settle(tx.connection, cid, sid, "logged_out")

        await self._manager.execute_transaction(cid, work)

    async def request_pairing_code(self, client: str, session: str, phone_number: str) -> SessionView:
        """Restart the pairing with a code for `phone_number` (the code arrives as a pairing-code event)."""
        recipient = parse_recipient(phone_number, field="phoneNumber")
        if recipient.phone is None:
            raise InvalidRequest("phoneNumber: a phone number with country code is expected, not a JID")
        view = await self.get(client, session)
        if view.session.status == SessionStatus.CONNECTED:
            raise InvalidRequest("the session is linked already: log it out to pair another phone")
        return await self._want(client, session, desired="running", mode="pairing_code", pairing_phone=recipient.phone)

    async def delete(self, client: str, session: str) -> None:
        """Delete the session with its contacts and messages; its worker stops it."""
        cid, sid = valid_client_id(client), valid_session_id(session)

        async def work(tx: Transaction) -> Session:
            deleted = await tx.session.delete(sid)
            await placements.remove(tx.connection, cid, sid)
            await notify.notify(tx.connection, notify.PLACEMENTS, f"{cid}/{sid}")
            return deleted

        deleted = await self._manager.execute_transaction(cid, work)
        if registry.simulated(deleted.engine) and deleted.phone_number:
            await self._sandbox.unlink(deleted.phone_number, SessionRef(cid, sid))
        if self._media is not None:  # its media rows went with it; an S3 bucket's objects go now
            await self._media.store.delete_prefix(cid, deleted.id)
        log.info("session.deleted", client_id=cid, session_id=sid)

    async def _want(
        self,
        client: str,
        session: str,
        *,
        desired: str,
        restart: bool = False,
        mode: str | None = None,
        pairing_phone: str | None = None,
    ) -> SessionView:
        cid, sid = valid_client_id(client), valid_session_id(session)

        async def work(tx: Transaction) -> SessionView:
            found = await tx.session.find_unique(sid)
            if found is None:
                raise SessionNotFound(f"session {sid!r} not found", session_id=sid)
            if desired == "running":  # an engine turned off for the client (or here) starts nothing new
                await self._quotas.check_engine(tx.connection, cid, found.engine)
            chosen_mode = mode
            if restart:
                chosen_mode = restart_mode(found.jid, found.status)
            placement = await placements.want(
                tx.connection, cid, sid, desired=desired, mode=chosen_mode, pairing_phone=pairing_phone
            )
            if placement is None:  # created before placements existed: place it now
                await placements.insert(
                    tx.connection, cid, sid, found.engine, chosen_mode or "qr", pairing_phone, found.status
                )
                placement = await placements.want(tx.connection, cid, sid, desired=desired)
            await notify.notify(tx.connection, notify.PLACEMENTS, f"{cid}/{sid}")
            assert placement is not None
            return SessionView(found, placement.desired, placement.worker_id)

        return await self._manager.execute_transaction(cid, work)

    # -- messages -------------------------------------------------------------------------------------

    async def send_text(
        self, client: str, session: str, to: str, text: str, *, idempotency_key: str | None = None
    ) -> SendAccepted:
        """Accept a text for sending, stored `pending` before this returns (see SendIntake.submit)."""
        return await self._sends.submit(client, session, to, text, idempotency_key=idempotency_key)

    async def send_message(
        self, client: str, session: str, to: str, outgoing: Outgoing, *, idempotency_key: str | None = None
    ) -> SendAccepted:
        """Accept a message of any kind for sending (see SendIntake.submit_message).

        The file of a media message is fetched, checked, converted and stored first: a bad file is refused
        before anything is queued. An invite message gets the group's current code from WhatsApp first
        (the session must be connected and an admin of the group).
        """
        content = outgoing.content
        if isinstance(content, GroupInvite):
            if self._invites is None:
                raise InvalidRequest("group_invite: invite messages cannot be sent here", field="group_invite")
            if to.strip().endswith("@" + GROUP_SERVER):
                raise InvalidRequest("to: an invite message goes to a person, not a group", field="to")
            if idempotency_key is not None:  # a replay answers as first, even if WhatsApp cannot be asked now
                replayed = await self._sends.recall_message(client, session, to, outgoing, idempotency_key)
                if replayed is not None:
                    return replayed
            filled = await self._invites(client, session, content)
            return await self._sends.submit_message(
                client, session, to, replace(outgoing, content=filled), idempotency_key=idempotency_key
            )
        if isinstance(content, Media):
            if self._media is None or outgoing.source is None:
                raise InvalidRequest(f"{content.kind.value}: files cannot be sent here (no media store)")
            source = outgoing.source
            prepared = await self._media.prepare_outgoing(client, session, content, source)
            outgoing = replace(outgoing, content=prepared, source=None)
            accepted = await self._sends.submit_message(
                client, session, to, outgoing, idempotency_key=idempotency_key, source=source
            )
            if prepared.media_id is not None and not accepted.replayed:
                await self._media.keep_for_message(client, prepared.media_id, accepted.message_id)
            return accepted
        return await self._sends.submit_message(client, session, to, outgoing, idempotency_key=idempotency_key)

    async def change_message(
        self, client: str, session: str, message_id: str, *, text: str | None = None
    ) -> SendAccepted:
        """Accept an edit (`text`) or a delete for everyone of a sent message (see SendIntake.submit_change)."""
        return await self._sends.submit_change(client, session, message_id, text=text)

    async def close(self) -> None:
        """Finish the sends being stored; send the wake-ups still waiting."""
        await self._sends.close()

    # -- the sandbox ----------------------------------------------------------------------------------

    async def sandbox_scan(self, client: str, session: str, phone_number: str) -> None:
        """A simulated phone with `phone_number` scans the session's current QR code."""
        ref, _ = await self._sandbox_session(client, session)
        recipient = parse_recipient(phone_number, field="phoneNumber")
        if recipient.phone is None:
            raise InvalidRequest("phoneNumber: a phone number with country code is expected, not a JID")
        await self._sandbox.post(session_address(ref), {"kind": "scan", "phone": recipient.phone})

    async def sandbox_enter_code(self, client: str, session: str, code: str) -> None:
        """The simulated phone types the pairing code."""
        ref, _ = await self._sandbox_session(client, session)
        if not isinstance(code, str) or not 1 <= len(code) <= 16:
            raise InvalidRequest("code: the pairing code shown for the session is expected")
        await self._sandbox.post(session_address(ref), {"kind": "enter_code", "code": code})

    async def sandbox_inject(
        self,
        client: str,
        session: str,
        from_number: str,
        text: str | None,
        *,
        from_me: bool = False,
        group: str | None = None,
        story: bool = False,
        from_lid: str | None = None,
        push_name: str | None = None,
        business_name: str | None = None,
        notice: str | None = None,
        content: Mapping[str, Any] | None = None,
        file: InboundFile | None = None,
    ) -> str:
        """Deliver a message from any number to the session (as if that phone wrote it); return its message id.

        `text` is a text message; `content` any kind, in the send body's shape (`type`, its object, `context`,
        `mentions`: see `domain.injection`), with `file` for a media message's uploaded file.
        `from_number` is a phone number, or a LID (`digits@lid`) for a sender known by LID only; `from_lid`
        gives a number's LID. `from_me`: the linked phone itself wrote it, in the chat with `from_number`.
        `group` (a group JID) or `story` (`status@broadcast`) say where it was written. `notice`
        (`undecryptable`, `history_sync`) delivers that notice about the message instead, and needs no text.
        """
        ref, current = await self._sandbox_session(client, session)
        sender = _inbound_sender(from_number, from_lid)
        where = _inbound_chat(group, story)
        message_id = new_message_id()
        now = datetime.now(UTC).isoformat()
        mail: dict[str, Any]
        injected = None
        if notice is not None:
            if content is not None or file is not None:
                raise InvalidRequest("notice: a notice carries no message (no type, no file)", field="notice")
            if text is not None:
                message_text(text)  # a notice carries no text, but what is given must still be one
            mail = {"kind": "notice", **_notice(notice, message_id, sender, where), "timestamp": now}
        elif content is not None:
            if text is not None:
                raise InvalidRequest(
                    "message: give either a text (`message`) or `type` with its object", field="message"
                )
            injected = parse_injected(content, file_attached=file is not None)
            mail = {"kind": "message", "id": message_id, "timestamp": now, **sender, **where, "from_me": bool(from_me)}
        else:
            if file is not None:
                raise InvalidRequest(
                    "type: the kind of media the file is (image, video, ...) is required", field="type"
                )
            if text is None:
                raise InvalidRequest("message: a text of 1 to 4096 characters is required", field="message")
            mail = {"kind": "message", "id": message_id, "text": message_text(text), "timestamp": now}
            mail.update(sender, **where, from_me=bool(from_me))
        if mail["kind"] == "message":
            # what the sender shows of itself: its profile name, a business account's verified name
            shown = {"push_name": push_name, "verified_name": business_name}
            mail.update({name: value for name, value in shown.items() if value})
        # a session keeps its last number after a logout, and another session may have linked that number since:
        # only the session's current link is written to, and through its own mailbox, never the number's
        linked = await self._sandbox.linked_phone(ref)
        if linked is None:
            raise SessionNotConnected(
                f"session {ref.session_id!r} is not linked to a simulated phone: link it (scan or pairing code) first",
                session_id=ref.session_id,
            )
        if mail["kind"] == "message":
            mail["to"] = linked
        if injected is not None:
            mail.update(await injected_mail(self._manager, self._sandbox, current, linked, injected, mail, file))
        await self._sandbox.post(session_address(ref), mail)
        return message_id

    # -- chats and presence from the phone (issue 14) -----------------------------------------------------

    async def sandbox_phone_state(
        self,
        client: str,
        session: str,
        from_number: str,
        *,
        from_lid: str | None = None,
        group: str | None = None,
        app_state: Mapping[str, Any] | None = None,
        presence: str | None = None,
        last_seen: datetime | None = None,
        blocked: bool | None = None,
        picture: str | None = None,
    ) -> str:
        """Make the session's phone change the state of its chat with `from_number` (or `group`): `app_state`
        (archived, pinned, muted with mutedUntil, read); or make `from_number` show `presence` (available,
        unavailable with `last_seen`; composing, recording, paused in its chat with the session, or in `group`);
        or make the phone block (`blocked` true) or unblock `from_number`; or make `from_number` change its
        profile `picture` (`changed`, `removed`). Returns the id of the injection."""
        ref, _ = await self._sandbox_session(client, session)
        states = {"appState": app_state, "presence": presence, "blocked": blocked, "picture": picture}
        if sum(value is not None for value in states.values()) != 1:
            raise InvalidRequest(f"appState: give one of {', '.join(states)}", field="appState")
        sender = _inbound_sender(from_number, from_lid)
        where = _inbound_chat(group, False)
        sender_jid = f"{sender['from']}@{USER_SERVER}" if sender["from"] else f"{sender['from_lid']}@{LID_SERVER}"
        now = datetime.now(UTC).isoformat()
        mail: dict[str, Any]
        if blocked is not None or picture is not None:
            mail = _contact_mail(sender, where, blocked, picture, now)
        elif app_state is not None:
            mail = {"kind": "app_state", "chat": where.get("group", sender_jid), "timestamp": now, **app_state}
            if app_state.get("read") and "group" not in where and sender["from"]:
                # the phone reads the chat: its senders see blue ticks for what it had not read
                mail["read_ids"] = [*await self._unread_ids(ref, sender["from"])]
        else:
            if presence not in set(SeenPresence):
                raise InvalidRequest(f"presence: one of {', '.join(SeenPresence)} expected", field="presence")
            in_chat = presence not in (SeenPresence.AVAILABLE, SeenPresence.UNAVAILABLE)
            if "group" in where and not in_chat:
                raise InvalidRequest("group: only typing, recording or paused are shown in a group", field="group")
            if last_seen is not None and presence != SeenPresence.UNAVAILABLE:
                raise InvalidRequest("lastSeen: only with presence unavailable", field="lastSeen")
            mail = {"kind": "presence", **sender, **where, "presence": presence, "chat": in_chat, "timestamp": now}
            if last_seen is not None:
                mail["last_seen"] = last_seen.isoformat()
        if await self._sandbox.linked_phone(ref) is None:
            raise SessionNotConnected(
                f"session {ref.session_id!r} is not linked to a simulated phone: link it (scan or pairing code) first",
                session_id=ref.session_id,
            )
        await self._sandbox.post(session_address(ref), mail)
        return new_message_id()

    async def _unread_ids(self, ref: SessionRef, key: str) -> tuple[str, ...]:
        """WhatsApp's ids of the newest received messages of the session's chat with `key` not read yet."""

        async def work(tx: Transaction) -> tuple[str, ...]:
            session = await tx.session.find_unique(ref.session_id)
            found = [] if session is None else await tx.contact.find_many(session_id=session.id, phone_number=key)
            if not found:
                return ()
            unread = await chat_rows.newest_unread(tx.connection, found[0].id, limit=500)
            return tuple(k.wa_message_id for k in unread)

        return await self._manager.execute_transaction(ref.client_id, work)

    async def sandbox_fault(self, client: str, session: str, fault: str, count: int | None = None) -> None:
        """Inject a fault: drop_connection, logout (from the phone), reject_next_send, restrict (the next send
        is refused as from a restricted account, code 463), fail_transient (the next `count` sends, 1 unless
        given, fail with a retryable error), expire_media (the media the session received so far expire on the
        media server: the phone can upload them again) or lose_media (the phone lost them too)."""
        ref, _ = await self._sandbox_session(client, session)
        if fault not in SANDBOX_FAULTS:
            raise InvalidRequest(f"fault: expected one of {', '.join(SANDBOX_FAULTS)}", fault=fault, field="fault")
        mail: dict[str, Any] = {"kind": "fault", "fault": fault}
        if count is not None:
            if fault != "fail_transient":
                raise InvalidRequest("count: only fail_transient fails a number of sends", field="count")
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_TRANSIENT_FAILURES:
                raise InvalidRequest(f"count: 1 to {MAX_TRANSIENT_FAILURES} sends", field="count")
            mail["count"] = count
        await self._sandbox.post(session_address(ref), mail)

    async def sandbox_group_act(self, client: str, session: str, act: dict[str, Any]) -> None:
        """A simulated phone acts in a group, told through the session (`act` as services/groups.py builds it)."""
        ref, _ = await self._sandbox_session(client, session)
        await self._sandbox.post(session_address(ref), {"kind": "group_act", **act})

    async def _sandbox_session(self, client: str, session: str) -> tuple[SessionRef, Session]:
        view = await self.get(client, session)
        if not registry.simulated(view.session.engine):
            raise InvalidRequest(f"session {session!r} runs on {view.session.engine}, not on the sandbox")
        if view.session.engine not in (await self._quotas.quotas(view.session.client_id)).engines:
            engine = view.session.engine
            raise EngineNotAllowed(f"engine {engine!r} is not enabled for this client", engine=engine)
        return SessionRef(view.session.client_id, view.session.session_id), view.session


def _lid_user(raw: object, field: str) -> str:
    match = _LID.fullmatch(raw.strip()) if isinstance(raw, str) else None
    if match is None:
        raise InvalidRequest(f"{field}: a LID is expected, 5-20 digits (with or without @lid)", field=field)
    return match.group(1)


def _inbound_sender(from_number: object, from_lid: object) -> dict[str, str | None]:
    """Return the mail fields naming who wrote an injected message: `from` (digits) and `from_lid` (digits)."""
    if isinstance(from_number, str) and from_number.strip().endswith("@" + LID_SERVER):
        if from_lid is not None:
            raise InvalidRequest("fromLid: `from` is a LID already", field="fromLid")
        return {"from": None, "from_lid": _lid_user(from_number, "from")}
    sender = parse_recipient(from_number, field="from")
    if sender.phone is None:
        raise InvalidRequest("from: a phone number with country code (or a LID, digits@lid) is expected", field="from")
    return {"from": sender.phone, "from_lid": None if from_lid is None else _lid_user(from_lid, "fromLid")}


def _inbound_chat(group: object, story: bool) -> dict[str, Any]:
    """Return the mail fields naming where an injected message was written: a group, the stories, or a chat."""
    if story and group is not None:
        raise InvalidRequest("group: a story is posted to status@broadcast, not in a group", field="group")
    if story:
        return {"story": True}
    if group is None:
        return {}
    raw = group.strip() if isinstance(group, str) else group
    jid = raw if not isinstance(raw, str) or "@" in raw else f"{raw}@{GROUP_SERVER}"
    try:
        recipient = parse_recipient(jid, field="group")
    except InvalidRequest:
        recipient = None
    if recipient is None or not recipient.is_group:
        raise InvalidRequest("group: a group JID is expected, e.g. 120363012345678901@g.us", field="group")
    return {"group": str(recipient.jid)}


def _notice(notice: object, message_id: str, sender: dict[str, str | None], where: dict[str, Any]) -> dict[str, Any]:
    """Return the mail fields of an injected notice about the message `message_id`."""
    if notice not in SANDBOX_NOTICES:
        raise InvalidRequest(f"notice: expected one of {', '.join(SANDBOX_NOTICES)}", field="notice")
    sender_jid = f"{sender['from']}@{USER_SERVER}" if sender["from"] else f"{sender['from_lid']}@{LID_SERVER}"
    chat_jid = STATUS_BROADCAST if where.get("story") else where.get("group", sender_jid)
    if notice == "undecryptable":
        details = {"messageId": message_id, "chatJid": chat_jid, "senderJid": sender_jid, "unavailable": False}
    else:  # the phone's history: one chunk, complete, of the chat
        details = {"type": "RECENT", "progress": 100, "chats": 1, "chatJid": chat_jid}
    return {"notice": notice, "details": details}


async def _event(tx: Transaction, session_id: str, kind: EventType, payload: dict[str, Any]) -> None:
    await tx.event.append(type=kind.value, session_id=session_id, payload={"sessionId": session_id, **payload})


def _contact_mail(
    sender: dict[str, Any], where: dict[str, Any], blocked: bool | None, picture: str | None, now: str
) -> dict[str, Any]:
    """The sandbox mail of the phone blocking or unblocking `sender`, or of `sender` changing its picture."""
    if "group" in where:
        raise InvalidRequest("group: a person blocks or changes a picture, not a group", field="group")
    if blocked is not None:
        return {"kind": "blocklist", **sender, "blocked": bool(blocked), "timestamp": now}
    if picture not in ("changed", "removed"):
        raise InvalidRequest("picture: changed or removed expected", field="picture")
    mail: dict[str, Any] = {"kind": "picture", **sender, "timestamp": now}
    if picture == "changed":
        mail["picture_id"] = str(1_000_000_000 + secrets.randbelow(9_000_000_000))  # ten digits, as WhatsApp's
    return mail
