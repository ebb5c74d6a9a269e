"""Two clients over every /whatsapp route: another client's ids are 404 (or absent from lists), never its data.

The cases are checked against /openapi.json, so a route added without an isolation case fails this suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.acceptance.support import ADMIN_KEY, assert_problem, new_client, running_app
from zapgate.settings import Settings


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, default_engine="sandbox", send_rate=0)
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


async def test_another_clients_ids_are_not_found_on_every_route(api: httpx.AsyncClient) -> None:
    acme, globex = await new_client(api, "acme"), await new_client(api, "globex")
    assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "acme-s"})).status_code == 201
    send = {"sessionId": "acme-s", "to": "5511999999999", "message": "acme's secret"}
    sent = await api.post("/whatsapp/send", headers=acme, json=send)
    assert sent.status_code == 202
    message_id = sent.json()["messageId"]
    hook = await api.post("/whatsapp/webhooks", headers=acme, json={"url": "https://example.com/acme-hook"})
    assert hook.status_code == 201, hook.text
    webhook_id = hook.json()["id"]
    s, m, w = "acme-s", message_id, webhook_id
    c = (await api.get("/whatsapp/contacts", headers=acme)).json()["contacts"][0]["id"]  # the send made it
    g = "120363000000000001@g.us"
    uploaded = await api.post(
        "/whatsapp/media", headers=acme, params={"sessionId": s}, files={"file": ("a.pdf", b"%PDF-1.4 acme's file")}
    )
    assert uploaded.status_code == 201, uploaded.text
    f = uploaded.json()["id"]
    typed = {"sessionId": s, "to": "5511999999999", "type": "text", "text": {"body": "acme's secret"}}
    c = (await api.get(f"/whatsapp/messages/{m}", headers=acme)).json()["contact"]["id"]  # the chat's id
    upload_form = {"message": '{"sessionId": "acme-s", "to": "5511999999999", "type": "document", "document": {}}'}

    # (method, path template, concrete path, body or None, what globex gets)
    cases: list[tuple[str, str, str, dict[str, Any] | None, str]] = [
        ("GET", "/whatsapp/audit", "/whatsapp/audit", None, "empty:entries"),  # first: globex has done nothing yet
        ("GET", "/whatsapp/sessions", "/whatsapp/sessions", None, "empty:sessions"),
        ("GET", "/whatsapp/sessions/{sessionId}", f"/whatsapp/sessions/{s}", None, "404"),
        ("DELETE", "/whatsapp/sessions/{sessionId}", f"/whatsapp/sessions/{s}", None, "404"),
        ("GET", "/whatsapp/sessions/{sessionId}/qr", f"/whatsapp/sessions/{s}/qr", None, "404"),
        (
            "POST",
            "/whatsapp/sessions/{sessionId}/pairing-code",
            f"/whatsapp/sessions/{s}/pairing-code",
            {"phoneNumber": "5511999990009"},
            "404",
        ),
        ("POST", "/whatsapp/sessions/{sessionId}/restart", f"/whatsapp/sessions/{s}/restart", None, "404"),
        ("POST", "/whatsapp/sessions/{sessionId}/logout", f"/whatsapp/sessions/{s}/logout", None, "404"),
        (
            "POST",
            "/whatsapp/sandbox/sessions/{sessionId}/scan",
            f"/whatsapp/sandbox/sessions/{s}/scan",
            {"phoneNumber": "5511999990009"},
            "404",
        ),
        (
            "POST",
            "/whatsapp/sandbox/sessions/{sessionId}/enter-code",
            f"/whatsapp/sandbox/sessions/{s}/enter-code",
            {"code": "ABCD-EFGH"},
            "404",
        ),
        (
            "POST",
            "/whatsapp/sandbox/sessions/{sessionId}/fault",
            f"/whatsapp/sandbox/sessions/{s}/fault",
            {"fault": "restrict"},
            "404",
        ),
        (
            "POST",
            "/whatsapp/sandbox/inbound",
            "/whatsapp/sandbox/inbound",
            {"sessionId": s, "from": "5511999990009", "message": "hi"},
            "404",
        ),
        ("POST", "/whatsapp/send", "/whatsapp/send", send, "404"),
        ("POST", "/whatsapp/messages", "/whatsapp/messages", typed, "404"),
        ("PATCH", "/whatsapp/messages/{messageId}", f"/whatsapp/messages/{m}", {"sessionId": s, "text": "x"}, "404"),
        ("DELETE", "/whatsapp/messages/{messageId}", f"/whatsapp/messages/{m}?sessionId={s}", None, "404"),
        ("POST", "/whatsapp/messages/upload", "/whatsapp/messages/upload", {"form": upload_form}, "404"),
        ("POST", "/whatsapp/media", f"/whatsapp/media?sessionId={s}", {"form": {}}, "404"),
        ("GET", "/whatsapp/media/{mediaId}", f"/whatsapp/media/{f}", None, "404"),
        ("GET", "/whatsapp/media/{mediaId}/info", f"/whatsapp/media/{f}/info", None, "404"),
        (
            "POST",
            "/whatsapp/sessions/{sessionId}/presence",
            f"/whatsapp/sessions/{s}/presence",
            {"to": "5511999999999", "presence": "composing"},
            "404",
        ),
        (
            "POST",
            "/whatsapp/sessions/{sessionId}/read",
            f"/whatsapp/sessions/{s}/read",
            {"chat": "5511999999999"},
            "404",
        ),
        (
            "GET",
            "/whatsapp/contacts/check",
            f"/whatsapp/contacts/check?sessionId={s}&numbers=5511999999999",
            None,
            "404",
        ),
        ("GET", "/whatsapp/stream", f"/whatsapp/stream?sessionId={s}", None, "404"),
        # groups: acme's session names nothing for globex (g: a group id of the right form)
        ("GET", "/whatsapp/groups", f"/whatsapp/groups?sessionId={s}", None, "404"),
        ("POST", "/whatsapp/groups", "/whatsapp/groups", {"sessionId": s, "subject": "acme's secret"}, "404"),
        ("GET", "/whatsapp/groups/{groupId}", f"/whatsapp/groups/{g}?sessionId={s}", None, "404"),
        ("PATCH", "/whatsapp/groups/{groupId}", f"/whatsapp/groups/{g}", {"sessionId": s, "subject": "x"}, "404"),
        (
            "PUT",
            "/whatsapp/groups/{groupId}/picture",
            f"/whatsapp/groups/{g}/picture?sessionId={s}",
            {"form": {}},
            "404",
        ),
        (
            "POST",
            "/whatsapp/groups/{groupId}/participants",
            f"/whatsapp/groups/{g}/participants",
            {"sessionId": s, "action": "add", "participants": ["5511999999999"]},
            "404",
        ),
        ("GET", "/whatsapp/groups/{groupId}/requests", f"/whatsapp/groups/{g}/requests?sessionId={s}", None, "404"),
        (
            "POST",
            "/whatsapp/groups/{groupId}/requests",
            f"/whatsapp/groups/{g}/requests",
            {"sessionId": s, "action": "approve", "participants": ["5511999999999"]},
            "404",
        ),
        ("GET", "/whatsapp/groups/{groupId}/invite", f"/whatsapp/groups/{g}/invite?sessionId={s}", None, "404"),
        ("DELETE", "/whatsapp/groups/{groupId}/invite", f"/whatsapp/groups/{g}/invite?sessionId={s}", None, "404"),
        ("POST", "/whatsapp/groups/join", "/whatsapp/groups/join", {"sessionId": s, "link": "AbCdEfGhIjKl"}, "404"),
        ("POST", "/whatsapp/groups/{groupId}/leave", f"/whatsapp/groups/{g}/leave", {"sessionId": s}, "404"),
        (
            "POST",
            "/whatsapp/sandbox/sessions/{sessionId}/group-act",
            f"/whatsapp/sandbox/sessions/{s}/group-act",
            {"phoneNumber": "5511999990009", "action": "leave", "groupId": g},
            "404",
        ),
        ("GET", "/whatsapp/messages", "/whatsapp/messages", None, "empty:messages"),
        ("GET", "/whatsapp/messages", f"/whatsapp/messages?sessionId={s}", None, "404"),
        ("GET", "/whatsapp/messages/{messageId}", f"/whatsapp/messages/{m}", None, "404"),
        ("GET", "/whatsapp/contacts", "/whatsapp/contacts", None, "empty:contacts"),
        ("GET", "/whatsapp/contacts/{contactId}", f"/whatsapp/contacts/{c}", None, "404"),
        ("POST", "/whatsapp/contacts/{contactId}/block", f"/whatsapp/contacts/{c}/block", None, "404"),
        ("POST", "/whatsapp/contacts/{contactId}/unblock", f"/whatsapp/contacts/{c}/unblock", None, "404"),
        ("GET", "/whatsapp/webhooks", "/whatsapp/webhooks", None, "empty:webhooks"),
        ("GET", "/whatsapp/webhooks/{webhookId}", f"/whatsapp/webhooks/{w}", None, "404"),
        ("PATCH", "/whatsapp/webhooks/{webhookId}", f"/whatsapp/webhooks/{w}", {"enabled": False}, "404"),
        ("DELETE", "/whatsapp/webhooks/{webhookId}", f"/whatsapp/webhooks/{w}", None, "404"),
        ("POST", "/whatsapp/webhooks/{webhookId}/rotate-secret", f"/whatsapp/webhooks/{w}/rotate-secret", {}, "404"),
        ("GET", "/whatsapp/webhooks/{webhookId}/deliveries", f"/whatsapp/webhooks/{w}/deliveries", None, "404"),
        (
            "POST",
            "/whatsapp/webhooks/{webhookId}/deliveries/{deliveryId}/redeliver",
            f"/whatsapp/webhooks/{w}/deliveries/1/redeliver",
            None,
            "404",
        ),
        # chats and presence (issue 14)
        ("GET", "/whatsapp/chats", f"/whatsapp/chats?sessionId={s}", None, "404"),
        ("GET", "/whatsapp/chats/{chatId}", f"/whatsapp/chats/{c}", None, "404"),
        ("GET", "/whatsapp/chats/{chatId}/messages", f"/whatsapp/chats/{c}/messages", None, "404"),
        ("POST", "/whatsapp/chats/{chatId}/read", f"/whatsapp/chats/{c}/read", None, "404"),
        ("POST", "/whatsapp/chats/{chatId}/archive", f"/whatsapp/chats/{c}/archive", None, "404"),
        ("POST", "/whatsapp/chats/{chatId}/unarchive", f"/whatsapp/chats/{c}/unarchive", None, "404"),
        ("POST", "/whatsapp/chats/{chatId}/pin", f"/whatsapp/chats/{c}/pin", None, "404"),
        ("POST", "/whatsapp/chats/{chatId}/unpin", f"/whatsapp/chats/{c}/unpin", None, "404"),
        ("POST", "/whatsapp/chats/{chatId}/mute", f"/whatsapp/chats/{c}/mute", {"duration": 3600}, "404"),
        ("POST", "/whatsapp/chats/{chatId}/unmute", f"/whatsapp/chats/{c}/unmute", None, "404"),
        (
            "POST",
            "/whatsapp/sessions/{sessionId}/presence/subscribe",
            f"/whatsapp/sessions/{s}/presence/subscribe",
            {"to": "5511999999999"},
            "404",
        ),
        (
            "POST",
            "/whatsapp/sessions/{sessionId}/presence/own",
            f"/whatsapp/sessions/{s}/presence/own",
            {"presence": "available"},
            "404",
        ),
        # creating takes the same id in globex's own namespace; acme's stays as it was (checked below)
        ("POST", "/whatsapp/session", "/whatsapp/session", {"sessionId": s}, "201"),
        ("POST", "/whatsapp/webhooks", "/whatsapp/webhooks", {"url": "https://example.com/globex-hook"}, "201"),
    ]
    documented = {
        (method.upper(), path)
        for path, operations in (await api.get("/openapi.json")).json()["paths"].items()
        if path.startswith("/whatsapp")
        for method in operations
    }
    assert {(method, template) for method, template, *_ in cases} == documented

    for method, template, path, body, expected in cases:
        if body is not None and "form" in body:  # a multipart route: a file with it
            files = {"file": ("x.pdf", b"%PDF-1.4 globex")}
            answer = await api.request(method, path, headers=globex, data=body["form"], files=files)
        else:
            answer = await api.request(method, path, headers=globex, json=body)
        where = f"{method} {template}"
        if expected == "404":
            assert_problem(answer, 404)
        elif expected == "201":
            assert answer.status_code == 201, (where, answer.text)
        else:
            field = expected.split(":")[1]
            assert answer.status_code == 200, (where, answer.text)
            assert answer.json()[field] == [], where
        for secret in (message_id, webhook_id, f, "acme's secret", "acme's file"):
            if secret not in path and secret not in str(body):  # an id globex gave may be named back to it
                assert secret not in answer.text, (where, secret)

    # globex's audit log holds its own calls only
    own = (await api.get("/whatsapp/audit", headers=globex, params={"limit": 500})).json()["entries"]
    assert {entry["actor"] for entry in own} <= {globex["X-API-Key"][:10]}

    # acme's data is all still there, untouched
    assert (await api.get(f"/whatsapp/sessions/{s}", headers=acme)).json()["status"] == "created"
    kept = await api.get(f"/whatsapp/messages/{m}", headers=acme)
    assert kept.status_code == 200 and kept.json()["content"] == "acme's secret"
    acme_hook = await api.get(f"/whatsapp/webhooks/{w}", headers=acme)
    assert acme_hook.status_code == 200 and acme_hook.json()["enabled"] is True
    assert [x["sessionId"] for x in (await api.get("/whatsapp/sessions", headers=acme)).json()["sessions"]] == [s]
