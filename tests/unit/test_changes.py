"""What WhatsApp lets a session edit or delete for everyone, and when."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from zapgate.db.conversation import Target
from zapgate.domain.content import Edit, MessageKey, Revoke
from zapgate.errors import MessageNotEditable
from zapgate.services.send_intake import check_change

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SENT = Target(
    row_id="r",
    message_id="M",
    wa_message_id="3EB0AA",
    direction="outbound",
    type="text",
    status="delivered",
    content="hello",
    payload=None,
    chat_jid="5511999999999@s.whatsapp.net",
    sender_jid=None,
    recipient="5511999999999",
    timestamp=NOW - timedelta(minutes=20),
    sent_at=NOW - timedelta(minutes=10),
    deleted_at=None,
)
EDIT = Edit(key=MessageKey("M", from_me=True), text="hi")
REVOKE = Revoke(key=MessageKey("M", from_me=True))


def test_a_sent_text_can_be_edited_for_15_minutes_and_deleted_for_60_hours() -> None:
    check_change(SENT, EDIT, NOW)  # 10 minutes after it was sent (its queueing time does not count)
    with pytest.raises(MessageNotEditable, match="15 minutes"):
        check_change(SENT, EDIT, NOW + timedelta(minutes=6))
    check_change(SENT, REVOKE, NOW + timedelta(hours=59))
    with pytest.raises(MessageNotEditable, match="3600 minutes"):
        check_change(SENT, REVOKE, NOW + timedelta(hours=61))


@pytest.mark.parametrize(
    ("target", "change", "said"),
    [
        (replace(SENT, direction="inbound"), EDIT, "not sent by this session"),
        (replace(SENT, direction="inbound"), REVOKE, "not sent by this session"),
        (replace(SENT, status="pending", wa_message_id=None), EDIT, "is pending"),
        (replace(SENT, status="failed"), REVOKE, "is failed"),
        (replace(SENT, deleted_at=NOW), EDIT, "deleted for everyone already"),
        (replace(SENT, type="reaction"), REVOKE, "a reaction message"),
        (replace(SENT, type="location", payload={"type": "location", "location": {}}), EDIT, "no text to edit"),
    ],
)
def test_what_whatsapp_would_not_take_is_refused(target: Target, change: Edit | Revoke, said: str) -> None:
    with pytest.raises(MessageNotEditable, match=said):
        check_change(target, change, NOW)
