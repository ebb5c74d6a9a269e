"""The sandbox network's registry tables: the phone directory (`sandbox_phones`) and each number's last owning
client (`sandbox_owners`), the mailboxes (`sandbox_mail`), the media server (`sandbox_media`), blocklists,
groups, and what the network keeps of each account (`sandbox_chat_states`, `sandbox_accounts`,
`sandbox_presence_subscriptions`). Statements for a registry transaction of the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Text, any_, delete, func, insert, literal, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db import notify
from zapgate.db.tables import (
    sandbox_accounts,
    sandbox_blocks,
    sandbox_chat_states,
    sandbox_group_members,
    sandbox_groups,
    sandbox_mail,
    sandbox_media,
    sandbox_owners,
    sandbox_phones,
    sandbox_presence_subscriptions,
)


async def link(conn: AsyncConnection, phone: str, client_id: str, session_id: str) -> tuple[str, str]:
    """Link `phone` to the session unless it is linked already; return the (client, session) it is linked to."""
    await conn.execute(
        pg_insert(sandbox_phones)
        .values(phone=phone, client_id=client_id, session_id=session_id)
        .on_conflict_do_nothing(index_elements=[sandbox_phones.c.phone])
    )
    row = (
        await conn.execute(
            select(sandbox_phones.c.client_id, sandbox_phones.c.session_id).where(sandbox_phones.c.phone == phone)
        )
    ).one()
    return row.client_id, row.session_id


async def claim_owner(conn: AsyncConnection, phone: str, client_id: str) -> str | None:
    """Make `client_id` the owner of `phone` (call it with the phone's link held: linkers take turns); return
    the client that owned it before, or None if none did."""
    stmt = select(sandbox_owners.c.client_id).where(sandbox_owners.c.phone == phone).with_for_update()
    before = (await conn.execute(stmt)).scalar_one_or_none()
    await conn.execute(
        pg_insert(sandbox_owners)
        .values(phone=phone, client_id=client_id)
        .on_conflict_do_update(
            index_elements=[sandbox_owners.c.phone], set_={"client_id": client_id, "linked_at": func.now()}
        )
    )
    return before


async def forget_account(conn: AsyncConnection, phone: str, address: str) -> None:
    """Forget what the network keeps of the account `phone` but its groups (engines/sandbox.py on a new owner):
    its chats' app state, presence and phone's habits, the presence subscriptions to and from it, its blocklist,
    and the mail waiting at its phone's `address`."""
    await conn.execute(delete(sandbox_chat_states).where(sandbox_chat_states.c.owner == phone))
    await conn.execute(delete(sandbox_accounts).where(sandbox_accounts.c.phone == phone))
    await conn.execute(
        delete(sandbox_presence_subscriptions).where(
            or_(sandbox_presence_subscriptions.c.subscriber == phone, sandbox_presence_subscriptions.c.target == phone)
        )
    )
    await conn.execute(delete(sandbox_blocks).where(sandbox_blocks.c.owner == phone))
    await conn.execute(delete(sandbox_mail).where(sandbox_mail.c.address == address))


async def unlink(conn: AsyncConnection, phone: str, client_id: str, session_id: str) -> None:
    """Unlink `phone` if it is linked to the session: the presence subscriptions it made end, and the account
    shows offline (last seen now) if it showed online."""
    unlinked = await conn.execute(
        delete(sandbox_phones).where(
            sandbox_phones.c.phone == phone,
            sandbox_phones.c.client_id == client_id,
            sandbox_phones.c.session_id == session_id,
        )
    )
    if unlinked.rowcount:
        await forget_presence_subscriptions(conn, phone)
        await conn.execute(
            update(sandbox_accounts)
            .where(sandbox_accounts.c.phone == phone, sandbox_accounts.c.available)
            .values(available=False, last_seen=func.now(), updated_at=func.now())
        )


async def phone_of(conn: AsyncConnection, client_id: str, session_id: str) -> str | None:
    """The phone linked to the session now, or None."""
    stmt = select(sandbox_phones.c.phone).where(
        sandbox_phones.c.client_id == client_id, sandbox_phones.c.session_id == session_id
    )
    return (await conn.execute(stmt.limit(1))).scalar_one_or_none()


async def directory(conn: AsyncConnection) -> dict[str, tuple[str, str]]:
    """Every linked phone with its (client, session)."""
    rows = await conn.execute(select(sandbox_phones.c.phone, sandbox_phones.c.client_id, sandbox_phones.c.session_id))
    return {row.phone: (row.client_id, row.session_id) for row in rows}


async def set_blocked(conn: AsyncConnection, owner: str, phone: str, blocked: bool) -> None:
    """Put `phone` on the blocklist of the account `owner`, or take it off."""
    if blocked:
        stmt: Any = pg_insert(sandbox_blocks).values(owner=owner, phone=phone).on_conflict_do_nothing()
    else:
        stmt = delete(sandbox_blocks).where(sandbox_blocks.c.owner == owner, sandbox_blocks.c.phone == phone)
    await conn.execute(stmt)


async def is_blocked(conn: AsyncConnection, owner: str, phone: str) -> bool:
    """Whether the account `owner` blocked `phone`."""
    stmt = select(literal(True)).where(sandbox_blocks.c.owner == owner, sandbox_blocks.c.phone == phone)
    return bool((await conn.execute(stmt)).scalar_one_or_none())


async def blocked_among(conn: AsyncConnection, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of the (owner, phone) `pairs` are blocks: the account `owner` blocked `phone`."""
    if not pairs:
        return set()
    stmt = select(sandbox_blocks.c.owner, sandbox_blocks.c.phone).where(
        tuple_(sandbox_blocks.c.owner, sandbox_blocks.c.phone).in_(sorted(set(pairs)))
    )
    return {(row.owner, row.phone) for row in await conn.execute(stmt)}


async def post(
    conn: AsyncConnection, address: str, envelope: dict[str, Any], unless_blocked: tuple[str, str] | None = None
) -> None:
    """Drop mail for `address` and wake whoever collects it (at commit); `unless_blocked`: see `post_many`."""
    await post_many(conn, [(address, envelope, unless_blocked)])


_POST = text(
    """
    WITH posted AS (
        INSERT INTO sandbox_mail (address, envelope)
        SELECT t.address, CAST(t.envelope AS jsonb)
        FROM unnest(CAST(:addresses AS text[]), CAST(:envelopes AS text[]), CAST(:owners AS text[]),
                    CAST(:senders AS text[])) WITH ORDINALITY AS t(address, envelope, owner, sender, n)
        WHERE t.owner IS NULL
           OR NOT EXISTS (SELECT 1 FROM sandbox_blocks b WHERE b.owner = t.owner AND b.phone = t.sender)
        ORDER BY t.n
        RETURNING address
    )
    SELECT pg_notify(:channel, address) FROM (SELECT DISTINCT address FROM posted) AS woken
    """
)


async def post_many(
    conn: AsyncConnection, posts: Collection[tuple[str, dict[str, Any], tuple[str, str] | None]]
) -> None:
    """Drop each (address, envelope, unless_blocked) of `posts`, in their order, and wake whoever collects them
    (at commit). Mail with `unless_blocked` (owner, phone) is not dropped at all if the account `owner` blocked
    `phone` (WhatsApp's server never delivers what a blocked sender writes)."""
    if not posts:
        return
    await conn.execute(
        _POST,
        {
            "addresses": [address for address, _, _ in posts],
            "envelopes": [json.dumps(envelope) for _, envelope, _ in posts],
            "owners": [pair[0] if pair else None for _, _, pair in posts],
            "senders": [pair[1] if pair else None for _, _, pair in posts],
            "channel": notify.SANDBOX,
        },
    )


_COLLECT = text(
    """
    UPDATE sandbox_mail SET taken_until = now() + make_interval(secs => :lease)
    WHERE id IN (
        SELECT id FROM (
            (SELECT id FROM sandbox_mail
             WHERE address = ANY(CAST(:addresses AS text[])) AND taken_until IS NULL
             ORDER BY id LIMIT :limit)
            UNION ALL
            (SELECT id FROM sandbox_mail
             WHERE taken_until < now() AND address = ANY(CAST(:addresses AS text[]))
             ORDER BY id LIMIT :limit)
        ) AS waiting
        ORDER BY id LIMIT :limit
    )
    AND (taken_until IS NULL OR taken_until < now())
    RETURNING id, address, envelope
    """
).columns(id=BigInteger, address=Text, envelope=JSONB)


async def collect(
    conn: AsyncConnection, addresses: Collection[str], lease: float, limit: int = 1000
) -> list[tuple[int, str, dict[str, Any]]]:
    """Hand out the waiting mail of `addresses` (not handed out, or its lease over) for `lease` seconds,
    oldest first.

    What is handed out now is never read (ix_sandbox_mail_waiting, ix_sandbox_mail_taken_until): a backlog held
    by a worker's recorder costs its collections nothing. Two collectors of one mailbox (a session hosted twice
    for a moment) hand each mail to one of them: the second waits for the first's row lock, then finds the mail
    taken.
    """
    rows = (await conn.execute(_COLLECT, {"addresses": list(addresses), "lease": lease, "limit": limit})).all()
    return [(row.id, row.address, dict(row.envelope)) for row in sorted(rows, key=lambda r: r.id)]


async def ack(conn: AsyncConnection, mail_ids: Collection[int]) -> None:
    """Remove delivered mail."""
    await conn.execute(delete(sandbox_mail).where(sandbox_mail.c.id.in_(list(mail_ids))))


async def renew(conn: AsyncConnection, mail_ids: Collection[int], lease: float) -> None:
    """Keep the handed-out mail `mail_ids` handed out until `lease` seconds from now (its collector holds it)."""
    await conn.execute(
        update(sandbox_mail)
        .where(sandbox_mail.c.id == any_(literal(list(mail_ids), ARRAY(BigInteger))))
        .values(taken_until=func.now() + text("make_interval(secs => :lease)").bindparams(lease=lease))
    )


async def release(conn: AsyncConnection, addresses: Collection[str]) -> None:
    """Make the mail of `addresses` handed out now collectable at once (whoever holds it no longer hosts them)."""
    await conn.execute(
        update(sandbox_mail)
        .where(sandbox_mail.c.address.in_(list(addresses)), sandbox_mail.c.taken_until.is_not(None))
        .values(taken_until=None)
    )


_UNCOLLECTED = text(
    """
    SELECT p.client_id, p.session_id, count(*) AS waiting,
           extract(epoch FROM now() - min(m.created_at)) AS oldest
    FROM placements p
    JOIN sandbox_phones ph ON ph.client_id = p.client_id AND ph.session_id = p.session_id
    JOIN sandbox_mail m ON m.address IN (:phone_prefix || ph.phone,
                                         :session_prefix || p.client_id || '/' || p.session_id)
    WHERE p.worker_id = :worker_id
      AND m.created_at < now() - make_interval(secs => :older_than)
      AND (m.taken_until IS NULL OR m.taken_until < now())
    GROUP BY p.client_id, p.session_id
    """
)


async def uncollected(
    conn: AsyncConnection, worker_id: str, older_than: float, *, phone_prefix: str, session_prefix: str
) -> list[tuple[str, str, int, float]]:
    """The linked sessions leased to `worker_id` whose mailboxes hold mail older than `older_than` seconds that
    nobody holds now: (client, session, how many, the oldest's age in seconds)."""
    rows = await conn.execute(
        _UNCOLLECTED,
        {
            "worker_id": worker_id,
            "older_than": older_than,
            "phone_prefix": phone_prefix,
            "session_prefix": session_prefix,
        },
    )
    return [(row.client_id, row.session_id, int(row.waiting), float(row.oldest)) for row in rows]


def _from_now(seconds: float) -> Any:
    return func.now() + text("make_interval(secs => :seconds)").bindparams(seconds=seconds)


async def store_media_part(conn: AsyncConnection, key: str, part: int, data: bytes, recipient: str, ttl: float) -> None:
    """Store part `part` (0, 1, ...) of the file `key`, for the phone `recipient`, downloadable for `ttl` seconds."""
    await conn.execute(
        insert(sandbox_media).values(key=key, part=part, data=data, recipient=recipient, expires_at=_from_now(ttl))
    )


async def media_parts(conn: AsyncConnection, key: str) -> int:
    """How many parts the file `key` has while it can be downloaded (0: expired, lost, or never stored)."""
    stmt = select(func.count()).where(sandbox_media.c.key == key, sandbox_media.c.expires_at > func.now())
    return int((await conn.execute(stmt)).scalar_one())


async def media_part(conn: AsyncConnection, key: str, part: int) -> bytes | None:
    """Part `part` of the file `key` while it can be downloaded, else None."""
    stmt = select(sandbox_media.c.data).where(
        sandbox_media.c.key == key, sandbox_media.c.part == part, sandbox_media.c.expires_at > func.now()
    )
    data = (await conn.execute(stmt)).scalar_one_or_none()
    return None if data is None else bytes(data)


async def copy_media(conn: AsyncConnection, key: str, new_key: str, ttl: float) -> bool:
    """Store the file `key` again (whether expired or not) as `new_key` for `ttl` seconds; False if it is gone."""
    copied = select(
        literal(new_key, Text),
        sandbox_media.c.part,
        sandbox_media.c.data,
        sandbox_media.c.recipient,
        _from_now(ttl),
    ).where(sandbox_media.c.key == key)
    stmt = insert(sandbox_media).from_select(["key", "part", "data", "recipient", "expires_at"], copied)
    return bool((await conn.execute(stmt)).rowcount)


async def expire_media(conn: AsyncConnection, recipient: str) -> int:
    """Make the files of `recipient` undownloadable now (their rows stay); return how many parts."""
    stmt = (
        update(sandbox_media)
        .where(sandbox_media.c.recipient == recipient, sandbox_media.c.expires_at > func.now())
        .values(expires_at=func.now())
    )
    return int((await conn.execute(stmt)).rowcount)


async def lose_media(conn: AsyncConnection, recipient: str) -> int:
    """Delete the files of `recipient`; return how many parts went."""
    return int((await conn.execute(delete(sandbox_media).where(sandbox_media.c.recipient == recipient))).rowcount)


_PURGE_MEDIA = text(
    """
    WITH gone AS (
        DELETE FROM sandbox_media WHERE ctid IN (
            SELECT ctid FROM sandbox_media WHERE expires_at < :cutoff LIMIT :batch
        ) RETURNING 1
    )
    SELECT count(*) FROM gone
    """
)


async def purge_media(conn: AsyncConnection, cutoff: datetime, batch: int) -> int:
    """Delete up to `batch` parts of files that expired before `cutoff`; return how many went."""
    return int((await conn.execute(_PURGE_MEDIA, {"cutoff": cutoff, "batch": batch})).scalar_one())


# -- groups (engines/sandbox_groups.py) --


@dataclass(frozen=True, slots=True)
class GroupRow:
    """A sandbox group as stored: its fields, and its members (number, role) in joining order."""

    fields: dict[str, Any]
    members: list[tuple[str, str]]


async def insert_group(conn: AsyncConnection, fields: dict[str, Any], members: list[tuple[str, str]]) -> None:
    """Store a new group and its members."""
    await conn.execute(insert(sandbox_groups).values(**fields))
    await _add_members(conn, str(fields["jid"]), members)


async def _add_members(conn: AsyncConnection, jid: str, members: list[tuple[str, str]]) -> None:
    if members:
        await conn.execute(
            insert(sandbox_group_members), [{"group_jid": jid, "phone": p, "role": r} for p, r in members]
        )


async def load_group(conn: AsyncConnection, jid: str, *, for_update: bool = False) -> GroupRow | None:
    """The group `jid` with its members (locked until the transaction ends with `for_update`), or None."""
    stmt = select(sandbox_groups).where(sandbox_groups.c.jid == jid)
    row = (await conn.execute(stmt.with_for_update() if for_update else stmt)).mappings().one_or_none()
    if row is None:
        return None
    members = await conn.execute(
        select(sandbox_group_members.c.phone, sandbox_group_members.c.role)
        .where(sandbox_group_members.c.group_jid == jid)
        .order_by(sandbox_group_members.c.position)
    )
    return GroupRow(dict(row), [(m.phone, m.role) for m in members])


async def save_group(conn: AsyncConnection, fields: dict[str, Any], members: list[tuple[str, str]]) -> None:
    """Write a changed group back: its fields, its members (kept ones keep their place, new ones come last)."""
    jid = str(fields["jid"])
    await conn.execute(
        update(sandbox_groups)
        .where(sandbox_groups.c.jid == jid)
        .values(**{k: v for k, v in fields.items() if k != "jid"}, updated_at=func.now())
    )
    before = dict(
        (
            await conn.execute(
                select(sandbox_group_members.c.phone, sandbox_group_members.c.role).where(
                    sandbox_group_members.c.group_jid == jid
                )
            )
        ).all()
    )
    after = dict(members)
    gone = [phone for phone in before if phone not in after]
    if gone:
        await conn.execute(
            delete(sandbox_group_members).where(
                sandbox_group_members.c.group_jid == jid, sandbox_group_members.c.phone.in_(gone)
            )
        )
    for phone, role in after.items():
        if phone in before and before[phone] != role:
            await conn.execute(
                update(sandbox_group_members)
                .where(sandbox_group_members.c.group_jid == jid, sandbox_group_members.c.phone == phone)
                .values(role=role)
            )
    await _add_members(conn, jid, [(phone, role) for phone, role in members if phone not in before])


async def groups_of(conn: AsyncConnection, phone: str) -> list[str]:
    """The JIDs of the groups `phone` is in."""
    stmt = select(sandbox_group_members.c.group_jid).where(sandbox_group_members.c.phone == phone)
    return list((await conn.execute(stmt)).scalars())


async def group_of_invite(conn: AsyncConnection, code: str) -> str | None:
    """The JID of the group whose invite code is `code`."""
    stmt = select(sandbox_groups.c.jid).where(sandbox_groups.c.invite_code == code)
    return (await conn.execute(stmt)).scalar_one_or_none()


# -- accounts (engines/sandbox_accounts.py) --

CHAT_STATE_FIELDS = ("archived", "pinned", "muted", "muted_until", "read")
# advisory lock class of sandbox chat states (31337: idempotency keys, 31338: contact identities)
_CHAT_STATE_LOCK = text("SELECT pg_advisory_xact_lock(31340, hashtext(:key))")


async def chat_state(conn: AsyncConnection, owner: str, chat: str) -> dict[str, Any] | None:
    """The app state the account `owner` keeps for `chat`, or None."""
    stmt = select(*(sandbox_chat_states.c[name] for name in CHAT_STATE_FIELDS)).where(
        sandbox_chat_states.c.owner == owner, sandbox_chat_states.c.chat == chat
    )
    row = (await conn.execute(stmt)).mappings().one_or_none()
    return None if row is None else dict(row)


async def lock_chat_state(conn: AsyncConnection, owner: str, chat: str) -> None:
    """Hold the chat's app state for this transaction, whether it is stored yet or not (two first changes to
    one chat take turns, as two later ones do)."""
    await conn.execute(_CHAT_STATE_LOCK, {"key": f"{owner}:{chat}"})


async def save_chat_state(conn: AsyncConnection, owner: str, chat: str, fields: dict[str, Any]) -> None:
    """Store the app state of the account's chat."""
    values = {name: fields[name] for name in CHAT_STATE_FIELDS}
    stmt = pg_insert(sandbox_chat_states).values(owner=owner, chat=chat, **values)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[sandbox_chat_states.c.owner, sandbox_chat_states.c.chat],
            set_={**values, "updated_at": func.now()},
        )
    )


async def account(conn: AsyncConnection, phone: str) -> dict[str, Any] | None:
    """What the network keeps of the account `phone` (available, last_seen, holding_reads), or None."""
    stmt = select(sandbox_accounts.c.available, sandbox_accounts.c.last_seen, sandbox_accounts.c.holding_reads)
    row = (await conn.execute(stmt.where(sandbox_accounts.c.phone == phone))).mappings().one_or_none()
    return None if row is None else dict(row)


async def update_account(conn: AsyncConnection, phone: str, values: dict[str, Any]) -> None:
    """Set some of the account's columns (available, last_seen, holding_reads), the others as they are."""
    stmt = pg_insert(sandbox_accounts).values(phone=phone, **values)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=[sandbox_accounts.c.phone], set_={**values, "updated_at": func.now()})
    )


async def subscribe_presence(conn: AsyncConnection, subscriber: str, target: str) -> None:
    """Record that `subscriber` hears the presence of `target`."""
    await conn.execute(
        pg_insert(sandbox_presence_subscriptions).values(target=target, subscriber=subscriber).on_conflict_do_nothing()
    )


async def presence_subscribers(conn: AsyncConnection, target: str) -> list[str]:
    """Who hears the presence of `target`, by number."""
    stmt = (
        select(sandbox_presence_subscriptions.c.subscriber)
        .where(sandbox_presence_subscriptions.c.target == target)
        .order_by(sandbox_presence_subscriptions.c.subscriber)
    )
    return list((await conn.execute(stmt)).scalars())


async def forget_presence_subscriptions(conn: AsyncConnection, subscriber: str) -> None:
    """End every presence subscription of `subscriber`."""
    await conn.execute(
        delete(sandbox_presence_subscriptions).where(sandbox_presence_subscriptions.c.subscriber == subscriber)
    )
