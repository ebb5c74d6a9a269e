"""Media end to end over HTTP on the sandbox: uploads, links, inline uploads, downloads, signed links, bad files."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import wave
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import asyncpg
import httpx
import pytest
from PIL import Image

from tests.acceptance.support import api_client, assert_problem, events, linked, message, new_client, received, sent
from tests.support.databases import plain_url
from tests.support.s3 import S3Server
from tests.support.waiting import eventually
from zapgate.db.manager import ConnectionManager
from zapgate.media.factory import media_store
from zapgate.services.media import MediaFiles
from zapgate.services.worker import Worker
from zapgate.settings import Settings

ALICE, BOB = "5511955550001", "5511955550002"


def png(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(out, "PNG")
    return out.getvalue()


def wav(seconds: float = 1.0) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(16000)
        frames = bytearray()
        for i in range(int(16000 * seconds)):
            frames += int(8000 * ((i // 40) % 2 * 2 - 1)).to_bytes(2, "little", signed=True)
        file.writeframes(bytes(frames))
    return out.getvalue()


@contextlib.contextmanager
def serving(files: dict[str, tuple[bytes, str]]) -> Iterator[str]:
    """A loopback HTTP server of `files` (path -> (bytes, content type)); yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = files.get(self.path)
            if found is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", found[1])
            self.send_header("Content-Length", str(len(found[0])))
            self.end_headers()
            self.wfile.write(found[0])

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url, send_rate=0, webhook_allow_loopback=True) as http:
        yield http


async def count(database_url: str, query: str, *args: object) -> int:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        return int(await conn.fetchval(query, *args))
    finally:
        await conn.close()


async def media_rows(database_url: str, schema: str) -> int:
    return await count(database_url, f'SELECT count(*) FROM "{schema}".media')  # the test's own schema name


async def arrived(api: httpx.AsyncClient, headers: dict[str, str], session: str, kind: str) -> dict[str, Any]:
    """The message-received event of the first `kind` message the session got, once its file is settled."""
    found: dict[str, Any] = {}

    async def announced() -> bool:
        for event in await events(api, headers, session, "message-received"):
            if event.get("messageType") == kind and event.get("media"):
                found.update(event)
                return True
        return False

    await eventually(announced, within=30.0)
    return found


async def test_files_go_both_ways_by_upload_link_and_inline(
    api: httpx.AsyncClient, worker: Worker, database_url: str
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    await linked(api, acme, "bob", BOB)

    # an image uploaded first, then sent by its id
    picture = png()
    upload = await api.post(
        "/whatsapp/media", headers=acme, params={"sessionId": "alice"}, files={"file": ("x.bin", picture, "text/plain")}
    )
    assert upload.status_code == 201, upload.text
    assert upload.json()["mime_type"] == "image/png"  # from its bytes, not from the client's word
    assert upload.json()["sha256"] == hashlib.sha256(picture).hexdigest()
    image = await api.post(
        "/whatsapp/messages",
        headers=acme,
        json={
            "sessionId": "alice",
            "to": BOB,
            "type": "image",
            "image": {"id": upload.json()["id"], "caption": "look"},
        },
    )
    assert image.status_code == 202, image.text
    await sent(api, acme, "alice", image.json()["messageId"])
    got = await arrived(api, acme, "bob", "image")
    assert got["media"]["status"] == "stored" and got["media"]["mime_type"] == "image/png"
    assert got["message"]["image"]["caption"] == "look"
    assert (got["media"]["width"], got["media"]["height"]) == (64, 48)
    # the signed link works without the API key, and gives the very bytes
    fetched = await api.get(got["media"]["url"])
    assert fetched.status_code == 200 and fetched.content == picture
    assert fetched.headers["content-type"] == "image/png"
    ranged = await api.get(got["media"]["url"], headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.content == picture[:10]
    assert ranged.headers["content-range"] == f"bytes 0-9/{len(picture)}"
    # and with the key, by id
    keyed = await api.get(f"/whatsapp/media/{got['media']['id']}", headers=acme)
    assert keyed.status_code == 200 and keyed.content == picture

    # a voice note by link (a WAV made into Ogg/Opus)
    with serving({"/note.wav": (wav(), "audio/wav")}) as base:
        voice = await api.post(
            "/whatsapp/messages",
            headers=acme,
            json={
                "sessionId": "alice",
                "to": BOB,
                "type": "audio",
                "audio": {"link": f"{base}/note.wav", "voice": True},
            },
        )
    assert voice.status_code == 202, voice.text
    note = await arrived(api, acme, "bob", "audio")
    assert note["message"]["audio"]["voice"] is True
    assert note["media"]["mime_type"].startswith("audio/ogg")
    assert 0.8 <= note["media"]["duration"] <= 1.2

    # a document in the same request as its message
    document = await api.post(
        "/whatsapp/messages/upload",
        headers=acme,
        data={
            "message": '{"sessionId": "alice", "to": "' + BOB + '", "type": "document", "document": {"caption": "cv"}}'
        },
        files={"file": ("cv.pdf", b"%PDF-1.4\n" + b"x" * 2000 + b"\n%%EOF\n", "application/pdf")},
    )
    assert document.status_code == 202, document.text
    doc = await arrived(api, acme, "bob", "document")
    assert doc["media"]["mime_type"] == "application/pdf" and doc["media"]["filename"] == "cv.pdf"

    # an image arrives from a phone that is no session: stored, announced with its link
    inbound = await api.post(
        "/whatsapp/sandbox/inbound",
        headers=acme,
        json={
            "sessionId": "alice",
            "from": "447700900123",
            "type": "sticker",
            "sticker": {"data": base64.b64encode(png(512, 512)).decode(), "mime_type": "image/png"},
        },
    )
    assert inbound.status_code == 202, inbound.text
    sticker = await arrived(api, acme, "alice", "sticker")
    assert sticker["media"]["status"] == "stored"
    assert (await api.get(sticker["media"]["url"])).status_code == 200
    assert await media_rows(database_url, "client_acme") >= 5


async def test_bad_files_and_links_are_refused_by_field_and_nothing_is_kept(
    api: httpx.AsyncClient, worker: Worker, database_url: str
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    before = await media_rows(database_url, "client_acme")

    def image(**part: Any) -> dict[str, Any]:
        return {"sessionId": "alice", "to": BOB, "type": "image", "image": part}

    with serving(
        {
            "/big.png": (png(3000, 3000)[:100] + b"\0" * (6 * 1024 * 1024), "image/png"),
            "/text.png": (b"hello, not a picture" * 100, "image/png"),
            "/broken.png": (png()[:60], "image/png"),
        }
    ) as base:
        cases = [
            (image(link=f"{base}/big.png"), "image", None),
            (image(link=f"{base}/text.png"), "image", "media_type_not_allowed"),
            (image(link=f"{base}/broken.png"), "image", "media_undecodable"),
            (image(link=f"{base}/missing.png"), "image.link", None),
            (image(id="nope"), None, "media_not_found"),
        ]
        for body, field, code in cases:
            answer = await api.post("/whatsapp/messages", headers=acme, json=body)
            assert answer.status_code in {404, 422}, answer.text
            if field is not None:
                assert field in answer.json()["detail"], answer.text
            if code is not None:
                assert answer.json()["code"] == code, answer.text
    assert await media_rows(database_url, "client_acme") == before
    page = (await api.get("/whatsapp/messages", headers=acme, params={"sessionId": "alice"})).json()
    assert page["messages"] == []


async def test_links_to_private_addresses_are_refused(
    api: httpx.AsyncClient, worker: Worker, database_url: str
) -> None:
    async with api_client(database_url, send_rate=0) as api:  # a second API process, loopback not allowed (default)
        acme = await new_client(api, "acme")
        await linked(api, acme, "alice", ALICE)
        with serving({"/a.png": (png(), "image/png")}) as base:
            answer = await api.post(
                "/whatsapp/messages",
                headers=acme,
                json={"sessionId": "alice", "to": BOB, "type": "image", "image": {"link": f"{base}/a.png"}},
            )
        problem = assert_problem(answer, 422)
        assert "image.link" in problem["detail"] and "loopback" in problem["detail"]


async def test_signed_links_cannot_be_forged_reused_late_or_turned_on_another_file(
    api: httpx.AsyncClient, worker: Worker
) -> None:
    acme = await new_client(api, "acme")
    globex = await new_client(api, "globex")
    await linked(api, acme, "alice", ALICE)
    assert (await api.post("/whatsapp/session", headers=globex, json={"sessionId": "g"})).status_code == 201
    ours = await api.post(
        "/whatsapp/media", headers=acme, params={"sessionId": "alice"}, files={"file": ("a.png", png())}
    )
    other = await api.post(
        "/whatsapp/media", headers=acme, params={"sessionId": "alice"}, files={"file": ("b.png", png(10, 10))}
    )
    theirs = await api.post(
        "/whatsapp/media", headers=globex, params={"sessionId": "g"}, files={"file": ("c.png", png(9, 9))}
    )
    url = httpx.URL(ours.json()["url"])
    assert (await api.get(url)).status_code == 200
    signature = url.params["signature"]
    forged = url.copy_set_param("signature", signature[:-2] + ("BB" if signature.endswith("AA") else "AA"))
    assert_problem(await api.get(forged), 401)
    later = url.copy_set_param("expires", str(int(url.params["expires"]) + 60))
    assert_problem(await api.get(later), 401)
    swapped = str(url).replace(ours.json()["id"], other.json()["id"])
    assert_problem(await api.get(swapped), 401)
    cross = str(url).replace("/media/acme/", "/media/globex/").replace(ours.json()["id"], theirs.json()["id"])
    assert_problem(await api.get(cross), 401)
    # by key, another client's file is not found
    assert_problem(await api.get(f"/whatsapp/media/{theirs.json()['id']}", headers=acme), 404)
    expired = url.copy_set_param("expires", "1000")
    assert_problem(await api.get(expired), 401)
    # a client that does not exist is answered as a bad link: links do not tell which clients exist
    assert_problem(await api.get(str(url).replace("/media/acme/", "/media/nobody/")), 401)


async def sandbox_files_left(database_url: str, phone: str) -> int:
    """How many parts of the files sent to `phone` the sandbox's media server still serves."""
    query = "SELECT count(*) FROM zapgate.sandbox_media WHERE recipient = $1 AND expires_at > now()"
    return await count(database_url, query, phone)


async def test_an_expired_file_is_asked_again_and_a_lost_one_fails_clearly(
    api: httpx.AsyncClient, worker: Worker, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    downloads = worker._recorder.downloads
    assert downloads is not None
    held: list[Any] = []
    monkeypatch.setattr(downloads, "wake", lambda ref=None: held.append(ref))  # arrived files wait for the test

    async def inject(fault: str) -> str:
        answer = await api.post(
            "/whatsapp/sandbox/inbound",
            headers=acme,
            json={
                "sessionId": "alice",
                "from": "447700900123",
                "type": "image",
                "image": {"data": base64.b64encode(png()).decode(), "mime_type": "image/png", "caption": fault},
            },
        )
        assert answer.status_code == 202, answer.text
        message_id = str(answer.json()["messageId"])

        async def stored() -> bool:
            got = await api.get(f"/whatsapp/messages/{message_id}", headers=acme, params={"sessionId": "alice"})
            return got.status_code == 200

        await eventually(stored, within=20.0)
        assert await sandbox_files_left(database_url, ALICE) > 0  # the file the fault takes away
        fault_answer = await api.post("/whatsapp/sandbox/sessions/alice/fault", headers=acme, json={"fault": fault})
        assert fault_answer.status_code == 202, fault_answer.text

        async def applied() -> bool:  # a fault is mail to the session (202): its worker applies it later
            return await sandbox_files_left(database_url, ALICE) == 0

        await eventually(applied, within=20.0)  # else the download may come first, and find the file
        return message_id

    expired = await inject("expire_media")
    monkeypatch.undo()
    downloads.wake()
    got = await arrived(api, acme, "alice", "image")
    assert got["messageId"] == expired and got["media"]["status"] == "stored"

    monkeypatch.setattr(downloads, "wake", lambda ref=None: held.append(ref))
    lost = await inject("lose_media")
    monkeypatch.undo()
    downloads.wake()

    async def failed() -> bool:
        return any(e["messageId"] == lost for e in await events(api, acme, "alice", "media-failed"))

    await eventually(failed, within=30.0)
    announced = [e for e in await events(api, acme, "alice", "message-received") if e["messageId"] == lost]
    assert len(announced) == 1 and announced[0]["media"]["status"] == "failed" and announced[0]["media"]["error"]
    assert "url" not in announced[0]["media"]
    mine = await message(api, acme, "alice", lost)
    assert mine["type"] == "image"
    await asyncio.sleep(0)
    assert await received(api, acme, "alice", "image")


async def test_files_go_through_an_s3_bucket_and_a_deleted_session_takes_its_objects(
    clear_zapgate_env: None, database_url: str, s3_server: S3Server
) -> None:
    bucket = await s3_server.new_bucket()
    settings = {
        "send_rate": 0,
        "media_store": f"s3://{bucket}/zg",
        "s3_endpoint_url": s3_server.endpoint_url,
        "s3_region": s3_server.region,
        "s3_access_key_id": s3_server.access_key_id,
        "s3_secret_access_key": s3_server.secret_access_key,
    }
    async with api_client(database_url, **settings) as api:
        config = Settings(database_url=database_url, **settings)  # type: ignore[arg-type]
        async with ConnectionManager(database_url, pool_size=4, health_interval=3600) as manager:
            files = MediaFiles(manager, media_store(config, manager))
            worker = Worker(manager, database_url, ("sandbox",), qr_timeout=30, poll_interval=0.2, media=files)
            await worker.start()
            try:
                acme = await new_client(api, "acme")
                await linked(api, acme, "alice", ALICE)
                await linked(api, acme, "bob", BOB)
                picture = png(32, 32)
                body = {"sessionId": "alice", "to": BOB, "type": "image", "image": {"caption": "via s3"}}
                answer = await api.post(
                    "/whatsapp/messages/upload",
                    headers=acme,
                    data={"message": json.dumps(body)},
                    files={"file": ("p.png", picture, "image/png")},
                )
                assert answer.status_code == 202, answer.text
                got = await arrived(api, acme, "bob", "image")
                assert (await api.get(got["media"]["url"])).content == picture
                async with s3_server.client() as s3:
                    listed = await s3.list_objects_v2(Bucket=bucket, Prefix="zg/acme/")
                keys = [item["Key"] for item in listed.get("Contents", [])]
                assert len(keys) >= 2  # alice's file and bob's copy, each under its own session
                assert (await api.delete("/whatsapp/sessions/bob", headers=acme)).status_code == 204
                async with s3_server.client() as s3:
                    left = await s3.list_objects_v2(Bucket=bucket, Prefix="zg/acme/")
                remaining = [item["Key"] for item in left.get("Contents", [])]
                assert remaining and len(remaining) < len(keys)
                assert all(got["media"]["id"] not in key for key in remaining)  # bob's copy went with bob
            finally:
                await worker.close()
