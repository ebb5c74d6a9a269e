"""What the sandbox network keeps of an account besides its link: its chats' app state, its presence, who
subscribed to that presence, and how its phone behaves.

Whose each piece is decides where it lives, as on WhatsApp (issue 14):
- a chat's app state (archived, pinned, muted, marked unread) is the *account's*: WhatsApp syncs it across a
  user's devices through its servers, and a device linked anew gets it. It is kept by number, so a session
  that moves to another worker (or a new session of the same client linking the same number) finds it; another
  client's session linking the number finds none of it (a new owner: `SandboxNetwork.link`);
- presence (online, or offline and last seen when) is the account's as its contacts see it: the server shows
  it to subscribers, and answers a new subscription with it;
- a presence subscription is the *subscriber's*, kept by the server while the subscriber's connection lasts:
  the subscribed-to account moving to another worker changes nothing for it, but the subscriber's own new
  connection (a restore elsewhere, a reconnect) starts with none, as WhatsApp forgets them then; its logout
  ends them too. Online is the connection's likewise: a new connection is offline until it says otherwise
  (whatsmeow's SendPresence after each connect), so one that finds its account still shown online (its last
  connection ended without a word: a worker that died) shows it offline, last seen then;
- the phone's habits (`hold_reads`: it leaves what arrives unread) are the phone's, the account's primary
  device, not the linked session's: they stay when the session moves.

What stays with the session in the worker, as it does with a linked device: the presence it last showed in each
chat (typing is never kept by WhatsApp) and the ids it marked read (for tests).

`LocalAccounts` keeps it in memory for a `LocalSandboxNetwork`; the worker's network keeps it in the registry
tables `sandbox_chat_states`, `sandbox_accounts` and `sandbox_presence_subscriptions`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from zapgate.domain.chats import ChatState


@dataclass(frozen=True, slots=True)
class SandboxAccount:
    """An account's presence as its contacts see it, and its phone's habits."""

    available: bool = False  # shown online
    last_seen: datetime | None = None  # when it was last shown offline
    holding_reads: bool = False  # the phone leaves what arrives unread: read receipts go when marked read


def merged_chat_state(current: ChatState | None, change: ChatState) -> ChatState:
    """A chat's app state after `change` (archiving unpins, pinning unarchives, as WhatsApp does)."""
    now = current or ChatState(archived=False, pinned=False, muted=False)
    archived = now.archived if change.archived is None else change.archived
    pinned = now.pinned if change.pinned is None else change.pinned
    if change.archived:
        pinned = False
    if change.pinned:
        archived = False
    muted, until = (now.muted, now.muted_until) if change.muted is None else (change.muted, change.muted_until)
    read = now.read if change.read is None else change.read
    return ChatState(archived=archived, pinned=pinned, muted=muted, muted_until=until if muted else None, read=read)


class LocalAccounts:
    """The accounts' state of a `LocalSandboxNetwork` (one process)."""

    def __init__(self) -> None:
        self._chat_states: dict[tuple[str, str], ChatState] = {}
        self._accounts: dict[str, SandboxAccount] = {}
        self._subscriptions: set[tuple[str, str]] = set()  # (subscriber, target)

    async def chat_state(self, owner: str, chat: str) -> ChatState | None:
        return self._chat_states.get((owner, chat))

    async def change_chat_state(
        self, owner: str, chat: str, change: Callable[[ChatState | None], ChatState]
    ) -> ChatState:
        state = self._chat_states[owner, chat] = change(self._chat_states.get((owner, chat)))
        return state

    async def account(self, phone: str) -> SandboxAccount:
        return self._accounts.get(phone, SandboxAccount())

    async def set_available(self, phone: str, available: bool, at: datetime) -> None:
        now = self._accounts.get(phone, SandboxAccount())
        last_seen = now.last_seen if available else at
        self._accounts[phone] = replace(now, available=available, last_seen=last_seen)

    async def set_holding_reads(self, phone: str, holding: bool) -> None:
        self._accounts[phone] = replace(self._accounts.get(phone, SandboxAccount()), holding_reads=holding)

    async def subscribe_presence(self, subscriber: str, target: str) -> None:
        self._subscriptions.add((subscriber, target))

    async def presence_subscribers(self, target: str) -> list[str]:
        return sorted(subscriber for subscriber, to in self._subscriptions if to == target)

    async def forget_presence_subscriptions(self, subscriber: str) -> None:
        self._subscriptions = {(s, to) for s, to in self._subscriptions if s != subscriber}

    def forget_account(self, phone: str) -> None:
        """Forget the account `phone`: its chats' app state, presence, habits, subscriptions to and from it."""
        self._chat_states = {key: state for key, state in self._chat_states.items() if key[0] != phone}
        self._accounts.pop(phone, None)
        self._subscriptions = {(s, to) for s, to in self._subscriptions if phone not in (s, to)}
