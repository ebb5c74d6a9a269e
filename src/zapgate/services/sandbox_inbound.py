"""A simulated phone's message to a sandbox session, made into mail: its keys as the session sees them, its file
on the network's media server.

A reaction, a vote, an edit, a delete or a reply names its message by id; WhatsApp's key also says whether the
session wrote it (and in a group, who did). The session's own messages tell: a message of the session known by
that id (WhatsApp's, or zapgate's for the caller's convenience) is the session's if it went out. One not known:
an edit or a delete is its writer's (only the author may), a vote is on the session's poll, the rest are about
the phone's messages.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, BinaryIO

from zapgate.db.manager import ConnectionManager
from zapgate.domain.content import (
    MAX_FILENAME_LENGTH,
    Content,
    Edit,
    Media,
    MediaKind,
    MessageKey,
    PollVote,
    Quote,
    Reaction,
    Revoke,
    kind_of,
)
from zapgate.domain.injection import Injected
from zapgate.domain.phones import LID_SERVER, USER_SERVER, parse_recipient
from zapgate.domain.records import Direction, Session
from zapgate.engines.sandbox import MediaUpload, content_mail
from zapgate.errors import InvalidRequest
from zapgate.services.sandbox import InboundFile, PostgresSandboxNetwork


async def injected_mail(
    manager: ConnectionManager,
    network: PostgresSandboxNetwork,
    session: Session,
    linked: str,
    injected: Injected,
    mail: Mapping[str, Any],
    file: InboundFile | None,
) -> dict[str, Any]:
    """Return the mail fields of `injected`, written to `session` (linked to the phone `linked`) as `mail` says
    (`from`, `from_lid`, `from_me`, `group`, `story`): keys resolved, mentions as JIDs, the file uploaded."""
    own = f"{linked}@{USER_SERVER}"
    writer = own if mail.get("from_me") else _sender_jid(mail)
    group = "group" in mail or "story" in mail
    known = _Known(manager, session, own, group)
    content: Content = injected.content
    if injected.target is not None and isinstance(content, Reaction | PollVote | Edit | Revoke):
        content = replace(content, key=await _target_key(known, content, injected.target, own, writer, group))
    quote = None
    if injected.reply_to is not None:
        key = await known.key(injected.reply_to, "context.message_id")
        quote = Quote(key=key or MessageKey(id=injected.reply_to))
    mentions = tuple(_mentioned(raw, f"mentions[{i}]") for i, raw in enumerate(injected.mentions))
    upload = None
    if isinstance(content, Media):
        content, upload = await _upload(network, content, injected, file, linked)
    return content_mail(content, quote=quote, mentions=mentions, upload=upload)


class _Known:
    """The session's messages, looked up by id."""

    def __init__(self, manager: ConnectionManager, session: Session, own: str, group: bool) -> None:
        self._manager = manager
        self._session = session
        self._own = own
        self._group = group

    async def key(self, message_id: str, field: str) -> MessageKey | None:
        """The key of the session's message known as `message_id` (WhatsApp's id, or ours), if there is one."""
        db = await self._manager.get_connection(self._session.client_id)
        found = await db.message.find_known(message_id, session_id=self._session.id)
        if found is None:
            return None
        mine = found.direction == Direction.OUTBOUND
        if mine and found.wa_message_id is None:
            raise InvalidRequest(f"{field}: message {message_id!r} has not been sent yet", field=field)
        author = self._own if mine else found.sender_jid
        return MessageKey(found.wa_message_id or found.message_id, mine, author if self._group else None)


async def _target_key(
    known: _Known, content: Reaction | PollVote | Edit | Revoke, target: str, own: str, writer: str, group: bool
) -> MessageKey:
    """The key, as the session sees it, of the message a reaction, vote, edit or delete acts on."""
    field = f"{kind_of(content).value}.message_id"
    found = await known.key(target, field)
    if isinstance(content, Edit | Revoke):
        session_wrote_it = writer == own  # only its author edits or deletes a message: this one's writer
        if found is not None and found.from_me != session_wrote_it:
            raise InvalidRequest(f"{field}: only its author edits or deletes a message", field=field)
        return found or MessageKey(target, session_wrote_it, writer if group else None)
    if found is not None:
        return found
    if isinstance(content, PollVote):
        return MessageKey(target, True, own if group else None)
    return MessageKey(target)


async def _upload(
    network: PostgresSandboxNetwork, media: Media, injected: Injected, file: InboundFile | None, linked: str
) -> tuple[Media, MediaUpload]:
    """Put the injected file on the media server, for the session's phone; fill in what the upload said of it."""
    source: BinaryIO
    if file is not None:
        source = file.file
        if media.mime_type is None and file.content_type:
            media = replace(media, mime_type=file.content_type)
        if media.kind is MediaKind.DOCUMENT and media.filename is None and file.filename:
            media = replace(media, filename=_filename(file.filename))
    else:
        assert injected.data is not None
        source = io.BytesIO(injected.data)
    return media, await network.upload(source, recipient=linked)


def _sender_jid(mail: Mapping[str, Any]) -> str:
    """The JID of who wrote an injected message: its number's, else its LID."""
    return f"{mail['from']}@{USER_SERVER}" if mail.get("from") else f"{mail['from_lid']}@{LID_SERVER}"


def _mentioned(raw: str, field: str) -> str:
    """A mention as the JID it names: a number's JID, or a JID as given."""
    recipient = parse_recipient(raw, field=field)
    return str(recipient.jid) if recipient.jid is not None else f"{recipient.phone}@{USER_SERVER}"


def _filename(raw: str) -> str | None:
    """The name of an uploaded file without its folders, if a document may carry it."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1].strip()
    fits = 0 < len(name) <= MAX_FILENAME_LENGTH and name.isprintable() and name not in {".", ".."}
    return name if fits else None
