"""The web console at `/` in a real browser: Debian's headless Chromium driven by Playwright, against the app.

Screenshots of each step go to `$ZAPGATE_SCREENSHOTS/<test>/` when that is set, else to the test's tmp_path;
each test prints its folder.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, Route, async_playwright, expect

from tests.acceptance.support import ADMIN_KEY, linked, new_client, running_app
from tests.support.media_files import write_image, write_tone, write_video
from tests.support.waiting import eventually
from zapgate.db.manager import ConnectionManager
from zapgate.domain.content import Media
from zapgate.engines import registry
from zapgate.engines.base import SessionRef
from zapgate.engines.registry import EngineContext
from zapgate.engines.sandbox import SandboxEngine
from zapgate.services.worker import Worker
from zapgate.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package: `./run test` installs it; Playwright downloads nothing
SEEN = 30_000  # ms to wait for what must appear (generous: a loaded 2-core machine)
SCREENSHOTS = os.environ.get("ZAPGATE_SCREENSHOTS")  # read at import: the fixtures clear ZAPGATE_* variables
ALICE, BOB, CAROL = "5511977770001", "5511977770002", "5511977770003"
QR_IMAGE = re.compile(r"^QR code")

expect.set_options(timeout=SEEN)


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, default_engine="sandbox", send_rate=0)
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium (`./run test` installs it)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `./run test` installs Debian's chromium package (apt-get)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(chromium))
        try:
            yield browser
        finally:
            await browser.close()


class Console:
    """One browser tab on the console, with what it logged and requested."""

    def __init__(self, page: Page, base_url: str, shoot: Callable[[Page, str], Awaitable[None]]) -> None:
        self.page = page
        self.base_url = base_url
        self._shoot = shoot
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("request", lambda request: self.requests.append(request.url))

    def script_errors(self) -> list[str]:
        """What the page logged as errors, less the API's refusals (the browser logs each 4xx it is answered)."""
        return [error for error in self.errors if not error.startswith("Failed to load resource")]

    async def shot(self, step: str) -> None:
        await self._shoot(self.page, step)

    async def sign_in(self, key: str) -> None:
        await self.page.goto(self.base_url + "/")
        await self.page.get_by_label("API key").fill(key)
        await self.page.get_by_role("button", name="Sign in").click()

    def row(self, session: str) -> Locator:
        return self.page.locator(f'#session-rows tr[data-session="{session}"]')

    @property
    def status(self) -> Locator:
        """The open session's status badge."""
        return self.page.locator("#detail-status")

    @property
    def qr(self) -> Locator:
        return self.page.get_by_role("img", name=QR_IMAGE)

    def form(self, form_id: str) -> Locator:
        return self.page.locator(f"#{form_id}")

    async def create(self, session: str, engine: str = "sandbox", phone: str = "") -> None:
        form = self.form("create-form")
        await form.get_by_label("Session id").fill(session)
        await form.get_by_label("Engine").select_option(engine)
        await form.get_by_label("Phone number").fill(phone)
        await form.get_by_role("button", name="Create session").click()

    async def open(self, session: str) -> None:
        await self.row(session).get_by_role("button", name=session).click()
        await expect(self.page.locator("#detail-id")).to_have_text(session)

    async def scan(self, phone: str) -> None:
        form = self.form("scan-form")
        await form.get_by_label("Simulated phone number").fill(phone)
        await form.get_by_role("button", name="Scan with a simulated phone").click()

    async def send(self, to: str, text: str) -> None:
        form = self.form("send-form")
        await form.get_by_label("To").fill(to)
        await form.get_by_label("Message").fill(text)
        await form.get_by_role("button", name="Send").click()

    def message(self, text: str) -> Locator:
        return self.page.locator("#message-list > li", has_text=text)


ConsoleFactory = Callable[[], Awaitable[Console]]


@pytest.fixture
def screenshots(request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The test's (emptied) screenshots folder, printed even under -q."""
    folder = Path(SCREENSHOTS) / request.node.name if SCREENSHOTS else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    with capsys.disabled():
        print(f"\nscreenshots of {request.node.name}: {folder}")  # noqa: T201  # where to look
    return folder


@pytest.fixture
async def consoles(api: httpx.AsyncClient, browser: Browser, screenshots: Path) -> AsyncIterator[ConsoleFactory]:
    """Open console tabs (one browser context: tabs of one window); screenshots numbered across them."""
    taken = 0

    async def shoot(page: Page, step: str) -> None:
        nonlocal taken
        taken += 1
        await page.screenshot(path=screenshots / f"{taken:02d}-{step}.png", full_page=True)

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    base_url = str(api.base_url).rstrip("/")
    tabs: list[Console] = []

    async def open_tab() -> Console:
        tabs.append(Console(await context.new_page(), base_url, shoot))
        return tabs[-1]

    try:
        yield open_tab
        for number, tab in enumerate(tabs, 1):  # how each tab ended: the first place to look when a test fails
            await tab.page.screenshot(path=screenshots / f"end-tab{number}.png", full_page=True)
    finally:
        await context.close()


async def test_a_new_user_links_two_sandbox_sessions_and_they_chat(
    api: httpx.AsyncClient, worker: Worker, consoles: ConsoleFactory
) -> None:
    acme = await new_client(api, "acme")
    key = acme["X-API-Key"]
    one = await consoles()
    await one.page.goto(one.base_url + "/")
    await expect(one.page.get_by_role("heading", name="Sign in")).to_be_visible()
    await one.shot("sign-in")
    await one.sign_in(key)
    await expect(one.page.locator("#live")).to_have_text("live")
    await expect(one.page.get_by_text("No sessions yet")).to_be_visible()
    await one.shot("signed-in")

    # alice: created, her QR code on screen with its countdown, scanned by a simulated phone
    await one.create("alice")
    await expect(one.page.locator("#detail-id")).to_have_text("alice")
    await expect(one.qr).to_be_visible()
    await expect(one.qr).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    await expect(one.page.locator("#qr-countdown")).to_have_text(re.compile(r"^Expires in \d+ s$"))
    await expect(one.row("alice").locator(".badge")).to_have_text("Awaiting QR scan")
    await one.shot("alice-qr")
    await one.scan(ALICE)
    await expect(one.status).to_have_text("Connected")
    await expect(one.status).to_have_attribute("data-tone", "ok")
    await expect(one.row("alice").locator(".badge")).to_have_attribute("data-status", "connected")
    await expect(one.page.locator("#detail-phone")).to_have_text(f"+{ALICE}")
    await expect(one.row("alice")).to_contain_text(f"+{ALICE}")
    await expect(one.qr).to_be_hidden()
    await one.shot("alice-connected")

    # bob: created in this tab and watched from a second, phone-sized one, which sees him connect by itself
    await one.create("bob")
    await expect(one.qr).to_be_visible()
    two = await consoles()
    await two.page.set_viewport_size({"width": 390, "height": 844})  # a phone-sized window
    await two.sign_in(key)
    await two.open("bob")
    await expect(two.qr).to_be_visible()
    await expect(two.status).to_have_text("Awaiting QR scan")
    await one.scan(BOB)
    await expect(two.status).to_have_text("Connected")
    await expect(two.row("bob").locator(".badge")).to_have_text("Connected")
    await two.shot("bob-connected-seen-from-a-second-tab")

    # alice writes to bob: ticks move on in her view, and the message appears in bob's by itself
    await one.open("alice")
    await one.send(BOB, "Olá, Bob!")
    sent = one.message("Olá, Bob!")
    await expect(sent).to_have_attribute("data-direction", "outbound")
    await expect(sent).to_contain_text(f"To +{BOB}")
    await expect(sent.locator(".ticks")).to_have_attribute("data-status", "read")
    await expect(sent.locator(".ticks")).to_have_text("Read")
    await expect(one.form("send-form").locator(".form-done")).to_have_text(re.compile(r"^Queued as \S+\.$"))
    await one.shot("alice-sent-read")
    received = two.message("Olá, Bob!")
    await expect(received).to_have_attribute("data-direction", "inbound")
    await expect(received.locator(".message-peer")).to_have_text(f"From +{ALICE}")
    await expect(received.locator(".ticks")).to_have_attribute("data-status", re.compile(r"^(delivered|read)$"))
    await two.shot("bob-received")

    # the sandbox's inbound form: a message from any number lands in bob's view
    inbound = two.form("inbound-form")
    await inbound.get_by_label("From").fill("+44 7700 900123")
    await inbound.get_by_label("Message").fill("<b>not bold</b>")
    await inbound.get_by_role("button", name="Inject inbound message").click()
    injected = two.message("<b>not bold</b>")  # shown as text, never parsed as HTML
    await expect(injected.locator(".message-peer")).to_have_text("From +447700900123")
    await expect(two.page.locator("#message-list b")).to_have_count(0)
    await two.shot("bob-inbound-injected")

    # alice logs out, once she confirms; the other tab sees it too
    await one.page.locator("#detail [data-action=logout]").click()
    dialog = one.page.get_by_role("dialog")
    await expect(dialog).to_contain_text("Unlink “alice” from its phone")
    await one.shot("alice-logout-confirmation")
    await dialog.get_by_role("button", name="Log out").click()
    await expect(one.status).to_have_text("Logged out")
    await expect(two.row("alice").locator(".badge")).to_have_text("Logged out")
    await one.shot("alice-logged-out")
    assert (await api.get("/whatsapp/sessions/alice", headers=acme)).json()["status"] == "logged_out"
    assert one.script_errors() == [] and two.script_errors() == []


async def test_errors_are_shown_where_they_belong(
    api: httpx.AsyncClient, worker: Worker, consoles: ConsoleFactory
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    tab = await consoles()

    # a wrong key: said next to the field, nothing kept
    await tab.sign_in("zg_wrong")
    await expect(tab.page.locator("#api-key-error")).to_have_text(
        "This API key was not accepted (401): check it and try again."
    )
    await expect(tab.page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    await expect(tab.page.locator("#console")).to_be_hidden()
    assert await tab.page.evaluate("sessionStorage.length") == 0
    await tab.shot("wrong-key")
    await tab.sign_in(ADMIN_KEY)  # the admin key is no client's key
    await expect(tab.page.locator("#api-key-error")).to_contain_text("not accepted (401)")

    await tab.sign_in(acme["X-API-Key"])
    await tab.open("alice")
    await expect(tab.status).to_have_text("Connected")
    send = tab.form("send-form")

    # a number that is none: under "To"
    await tab.send("12", "hi")
    await expect(tab.page.locator("#send-to-error")).to_contain_text("phone number")
    await expect(send.get_by_label("To")).to_have_attribute("aria-invalid", "true")
    await expect(send.get_by_label("To")).to_be_focused()
    await tab.shot("bad-number")

    # a text over 4096 characters: under "Message", with the counter in red
    await tab.send(BOB, "x" * 4097)
    await expect(tab.page.locator("#send-message-count")).to_have_text("4097 / 4096 characters")
    await expect(tab.page.locator("#send-message-count")).to_have_class(re.compile(r"\bover\b"))
    await expect(tab.page.locator("#send-message-error")).to_have_text("String should have at most 4096 characters")
    await expect(send.get_by_label("Message")).to_have_attribute("aria-invalid", "true")
    await expect(tab.page.locator("#send-to-error")).to_be_empty()
    await expect(send.get_by_label("To")).not_to_have_attribute("aria-invalid", "true")
    await tab.shot("text-too-long")
    listed = await api.get("/whatsapp/messages", headers=acme, params={"sessionId": "alice"})
    assert listed.json()["messages"] == []  # neither was sent

    # a taken session id: under "Session id"; an empty one never leaves the page
    await tab.create("alice")
    await expect(tab.page.locator("#create-session-id-error")).to_contain_text("exists")
    await tab.create("")
    await expect(tab.page.locator("#create-session-id-error")).to_have_text("Required.")
    await tab.shot("session-id-errors")

    # a session that pairs by code shows it large
    await tab.create("carol", phone="5511977770003")
    await expect(tab.status).to_have_text("Awaiting pairing code")
    await expect(tab.page.locator("#pairing-code")).to_have_text(re.compile(r"^[A-Z0-9]{4}-[A-Z0-9]{4}$"))
    await tab.shot("pairing-code")
    # on the sandbox the simulated phone types it, and the session links
    await tab.page.get_by_role("button", name="Type the code on the simulated phone").click()
    await expect(tab.status).to_have_text("Connected")
    await tab.shot("pairing-code-typed")

    # delete asks first: cancelled, nothing happens; confirmed, the session is gone
    await tab.page.locator("#detail [data-action=delete]").click()
    dialog = tab.page.get_by_role("dialog")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(tab.row("carol")).to_have_count(1)
    await tab.page.locator("#detail [data-action=delete]").click()
    await dialog.get_by_role("button", name="Delete").click()
    await expect(tab.row("carol")).to_have_count(0)
    await expect(tab.page.locator("#sessions-notice")).to_have_text("Session carol deleted.")
    assert (await api.get("/whatsapp/sessions/carol", headers=acme)).status_code == 404
    assert tab.script_errors() == []


async def test_the_page_is_served_whole_by_the_gateway(api: httpx.AsyncClient, consoles: ConsoleFactory) -> None:
    page = await api.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self';")
    assert "<title>zapgate console</title>" in page.text
    assert (await api.get("/", headers={"If-None-Match": page.headers["etag"]})).status_code == 304
    for path, media_type in [
        ("/console/console.css", "text/css"),
        ("/console/console.js", "javascript"),
        ("/console/socket.io.min.js", "javascript"),
        ("/console/socket.io.LICENSE.txt", "text/plain"),
    ]:
        response = await api.get(path)
        assert response.status_code == 200, path
        assert media_type in response.headers["content-type"], (path, response.headers["content-type"])
    bundle = (await api.get("/console/socket.io.min.js")).text
    assert bundle.startswith("/*!\n * Socket.IO v4") and "Released under the MIT License" in bundle[:200]
    missing = await api.get("/console/nothing.js")
    assert missing.status_code == 404
    unknown = await api.get("/no/such/route")  # the console takes nothing from the API
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    assert "/" not in (await api.get("/openapi.json")).json()["paths"]

    key = (await new_client(api, "acme"))["X-API-Key"]
    tab = await consoles()
    elsewhere: list[str] = []

    async def same_origin_only(route: Route) -> None:
        if route.request.url.startswith(tab.base_url + "/"):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    await tab.page.route("**/*", same_origin_only)
    sockets: list[str] = []
    tab.page.on("websocket", lambda socket: sockets.append(socket.url))
    await tab.sign_in(key)
    await expect(tab.page.locator("#live")).to_have_text("live")
    await expect(tab.page.get_by_role("link", name="API docs", exact=True)).to_have_attribute("href", "/docs")
    await expect(tab.page.get_by_role("link", name="Health")).to_have_attribute("href", "/health/ready")
    await tab.shot("signed-in")

    assert tab.errors == []
    assert elsewhere == []
    assert sockets and all(url.startswith(tab.base_url.replace("http://", "ws://") + "/") for url in sockets)
    assert all(key not in url for url in tab.requests + sockets)  # the key travels in headers only
    assert await tab.page.evaluate("sessionStorage.getItem('zapgate.apiKey')") == key
    assert await tab.page.evaluate("localStorage.length") == 0

    await tab.page.reload()  # the tab keeps its sign-in
    await expect(tab.page.locator("#sessions-title")).to_be_visible()
    await tab.page.get_by_role("button", name="Sign out").click()
    await expect(tab.page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert await tab.page.evaluate("sessionStorage.length") == 0
    assert tab.errors == []


# -- rich messages ------------------------------------------------------------------------------------


class HeldDownloads(SandboxEngine):
    """The sandbox, whose downloads wait while `flowing` is clear: what a list shows of a file on its way."""

    def __init__(self, context: EngineContext) -> None:
        super().__init__(context.on_event, context.sandbox_network())
        self.flowing = asyncio.Event()
        self.flowing.set()

    async def download(self, ref: SessionRef, media: Media, dest: str) -> None:
        await self.flowing.wait()
        await super().download(ref, media, dest)


@pytest.fixture
async def held_worker(database_url: str) -> AsyncIterator[HeldDownloads]:
    """A sandbox worker in the test's process (as `worker`) whose engine is `HeldDownloads`."""
    original = registry.spec("sandbox")
    registry.register(replace(original, build=HeldDownloads))
    async with ConnectionManager(database_url, pool_size=4, health_interval=3600) as manager:
        try:
            worker = Worker(manager, database_url, ("sandbox",), qr_timeout=30, poll_interval=0.2)
        finally:
            registry.register(original)  # its engine is built: nothing else sees the replacement
        engine = worker.engine("sandbox")
        assert isinstance(engine, HeldDownloads)
        await worker.start()
        try:
            yield engine
        finally:
            engine.flowing.set()
            await worker.close()


def inline(path: Path, mime: str, **fields: Any) -> dict[str, Any]:
    """A file as the sandbox's inbound route takes it in JSON: base64, with what the phone says it is."""
    return {"data": base64.b64encode(path.read_bytes()).decode(), "mime_type": mime, **fields}


async def files_settled(api: httpx.AsyncClient, headers: dict[str, str], session: str, count: int) -> bool:
    """Whether the session holds `count` messages with a file, none of them still downloading."""
    page = await api.get("/whatsapp/messages", headers=headers, params={"sessionId": session, "limit": 100})
    kinds = {"image", "video", "audio", "document", "sticker"}
    ids = [m["message"][m["type"]]["id"] for m in page.json()["messages"] if m["type"] in kinds]
    if len(ids) < count:
        return False
    infos = [(await api.get(f"/whatsapp/media/{i}/info", headers=headers)).json() for i in ids]
    return all(info["status"] != "pending" for info in infos)


async def loaded(image: Locator) -> int:
    """The natural width of an <img> once the browser decoded it (scrolled to: it loads lazily)."""
    await image.scroll_into_view_if_needed()
    await expect(image).to_be_visible()

    async def decoded() -> int:
        return int(await image.evaluate("(img) => img.complete ? img.naturalWidth : 0"))

    return int(await eventually(decoded, within=SEEN / 1000))


async def test_every_kind_of_message_shows_as_people_know_it(
    api: httpx.AsyncClient, held_worker: HeldDownloads, consoles: ConsoleFactory, tmp_path: Path
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)

    async def carol(body: dict[str, Any], **fields: Any) -> str:
        """Carol's phone writes `body` to alice (or alice's own phone does, with from_me)."""
        sent = await api.post(
            "/whatsapp/sandbox/inbound", headers=acme, json={"sessionId": "alice", "from": CAROL, **body, **fields}
        )
        assert sent.status_code == 202, sent.text
        return str(sent.json()["messageId"])

    photo = write_image(tmp_path / "photo.png", (320, 240), "PNG")
    sticker = write_image(tmp_path / "sticker.webp", (128, 128), "WEBP", "RGBA")
    tram = write_video(tmp_path / "tram.mp4", container="mp4")
    voice = write_tone(tmp_path / "voice.ogg", container="ogg", codec="libopus", rate=48_000, seconds=3.0)
    menu = tmp_path / "menu.pdf"
    menu.write_bytes(b"%PDF-1.4\n% the menu\n%%EOF\n" * 60)

    # carol writes one message of each kind, then reacts, votes, replies, edits and deletes
    text = await carol({"message": "Bom dia! Lunch at Sé?"})
    image = await carol({"type": "image", "image": inline(photo, "image/png", caption="The square at noon")})
    sticker_id = await carol({"type": "sticker", "sticker": inline(sticker, "image/webp")})
    video = await carol({"type": "video", "video": inline(tram, "video/mp4", caption="The tram", duration=1)})
    voice_id = await carol({"type": "audio", "audio": inline(voice, "audio/ogg; codecs=opus", voice=True, duration=3)})
    document = await carol(
        {"type": "document", "document": inline(menu, "application/pdf", filename="menu.pdf", caption="<b>today</b>")}
    )
    place = await carol(
        {
            "type": "location",
            "location": {
                "latitude": -23.5505,
                "longitude": -46.6333,
                "name": "Praça da Sé",
                "address": "Sé, São Paulo - SP",
            },
        }
    )
    card = await carol(
        {
            "type": "contacts",
            "contacts": [
                {"name": {"formatted_name": "Ana Souza"}, "phones": [{"phone": "+55 11 91234-5678", "type": "CELL"}]}
            ],
        }
    )
    poll = await carol(
        {
            "type": "poll",
            "poll": {
                "question": "Where for lunch?",
                "options": ["Sé", "Pinheiros", "Liberdade"],
                "selectable_count": 2,
            },
        }
    )
    acting = [
        await carol({"type": "poll_vote", "poll_vote": {"message_id": poll, "selected": ["Sé"]}}),
        await carol(
            {"type": "poll_vote", "poll_vote": {"message_id": poll, "selected": ["Sé", "Liberdade"]}}, fromMe=True
        ),
        await carol({"type": "reaction", "reaction": {"message_id": image, "emoji": "❤️"}}),
        await carol({"type": "reaction", "reaction": {"message_id": image, "emoji": "❤️"}}, fromMe=True),
        await carol({"type": "reaction", "reaction": {"message_id": place, "emoji": "👍"}}, fromMe=True),
    ]
    elsewhere = await carol({"type": "reaction", "reaction": {"message_id": "3EB0000000000000OLD1", "emoji": "🙏"}})
    reply = await carol({"message": "Yes, see you there", "context": {"message_id": text}})
    asked = await carol({"message": "Did you get my note?", "context": {"message_id": "3EB0000000000000OLD2"}})
    five = await carol({"message": "See you at 5"})
    acting.append(await carol({"type": "edit", "edit": {"message_id": five, "text": "See you at 6"}}))
    oops = await carol({"message": "Wrong chat, sorry"})
    acting.append(await carol({"type": "revoke", "revoke": {"message_id": oops}}))

    async def settled() -> bool:
        return await files_settled(api, acme, "alice", 5)

    await eventually(settled, within=60.0)
    # two more files, whose downloads wait: the list shows them at once; one of them the phone then loses
    held_worker.flowing.clear()
    scan = await carol({"type": "document", "document": inline(menu, "application/pdf", filename="scan.pdf")})
    lost = await api.post("/whatsapp/sandbox/sessions/alice/fault", headers=acme, json={"fault": "lose_media"})
    assert lost.status_code == 202, lost.text
    later = await carol(
        {
            "type": "image",
            "image": inline(
                write_image(tmp_path / "later.png", (200, 300), "PNG"), "image/png", caption="Still on its way"
            ),
        }
    )

    tab = await consoles()
    await tab.page.set_viewport_size({"width": 1280, "height": 2400})
    await tab.sign_in(acme["X-API-Key"])
    await tab.open("alice")
    await tab.page.locator("#message-list").evaluate("(list) => { list.style.maxHeight = 'none'; }")  # all in a shot

    def item(message_id: str) -> Locator:
        return tab.page.locator(f'#message-list > li[data-message-id="{message_id}"]')

    await expect(item(later).locator(".media-slot")).to_have_attribute("data-state", "pending")
    await expect(item(later).locator(".media-slot")).to_have_text("Image: downloading…")
    await expect(item(scan).locator(".media-slot")).to_have_text("Document scan.pdf: downloading…")

    thumb = item(image).locator("img.thumb")
    assert await loaded(thumb) == 320
    await expect(thumb).to_have_attribute("alt", "Image: The square at noon")
    await expect(thumb).to_have_attribute("loading", "lazy")
    signed = re.compile(r"^/media/acme/\S+\?expires=")
    await expect(item(image).locator("a.media-open")).to_have_attribute("href", signed)
    await expect(item(image)).to_contain_text("The square at noon")
    chips = item(image).locator(".reactions .chip")
    await expect(chips).to_have_count(1)
    await expect(chips).to_have_text("❤️2")
    await expect(chips).to_have_attribute("title", f"+{CAROL}, You")
    await expect(item(place).locator(".chip")).to_have_text("👍1")
    assert await loaded(item(sticker_id).locator("img.sticker")) == 128

    player = item(video).locator("video")
    await expect(player).to_have_attribute("preload", "none")
    await expect(player).to_have_attribute("controls", "")
    await expect(player).to_have_attribute("src", signed)
    await expect(item(video)).to_contain_text("The tram")
    note = item(voice_id)
    await expect(note.locator(".audio")).to_have_attribute("data-voice", "true")
    await expect(note.locator(".media-facts")).to_have_text("Voice note · 0:03")
    await expect(note.locator("audio[controls]")).to_have_attribute("src", signed)
    name = item(document).locator("a.document-name")
    await expect(name).to_have_text("menu.pdf")
    await expect(name).to_have_attribute("download", "menu.pdf")
    await expect(item(document).locator(".media-facts")).to_have_text("application/pdf · 1.5 KB")
    await expect(item(document)).to_contain_text("<b>today</b>")  # a caption is text, never HTML
    await expect(tab.page.locator("#message-list b")).to_have_count(0)

    await expect(item(place).locator(".location-name")).to_have_text("Praça da Sé")
    await expect(item(place).locator(".location-coordinates")).to_have_text("-23.55050, -46.63330")
    await expect(item(place).get_by_role("link", name="Open in OpenStreetMap")).to_have_attribute(
        "href", re.compile(r"^https://www\.openstreetmap\.org/\?mlat=-23\.550500&mlon=-46\.633300")
    )
    await expect(item(card).locator(".contact-name")).to_have_text("Ana Souza")
    await expect(item(card).locator(".contact-phones")).to_have_text("+55 11 91234-5678 (cell)")
    options = item(poll).locator(".poll-options li")
    await expect(options.locator(".poll-option")).to_have_text(["Sé", "Pinheiros", "Liberdade"])
    await expect(options.locator(".poll-count")).to_have_text(["2 votes", "0 votes", "1 vote"])
    await expect(item(poll)).to_contain_text("2 voters")

    await expect(item(reply).locator(".message-quote")).to_have_text(f"+{CAROL}Bom dia! Lunch at Sé?")
    await expect(item(asked).locator(".message-quote")).to_have_text("reply to an earlier message")
    await expect(item(five).locator(".message-text")).to_have_text("See you at 6")
    edited = item(five).locator('.mark[data-mark="edited"]')
    await expect(edited).to_have_text("edited")
    await expect(edited).to_have_attribute("title", re.compile(r"^Edited "))
    await expect(item(oops)).to_have_attribute("data-deleted", "true")
    await expect(item(oops).locator('.mark[data-mark="deleted"]')).to_have_attribute("title", re.compile("^Deleted "))
    # what acts on a shown message is shown on it; what acts on one not shown says so in a line
    for hidden in acting:
        await expect(item(hidden)).to_have_count(0)
    await expect(item(elsewhere)).to_have_text(re.compile("Reacted 🙏 to an earlier message"))
    await tab.shot("alice-rich-messages")

    # the downloads go on: the lost file is said unavailable, the photo replaces "downloading…" by itself
    held_worker.flowing.set()
    assert await loaded(item(later).locator("img.thumb")) == 200
    await expect(item(scan).locator(".media-slot")).to_have_text("Document scan.pdf: file unavailable")
    await expect(item(scan).locator(".media-slot")).to_have_attribute("data-state", "failed")
    await tab.shot("alice-downloads-settled")
    assert tab.script_errors() == []


async def test_a_file_chosen_in_the_send_box_arrives_as_its_kind(
    api: httpx.AsyncClient, worker: Worker, consoles: ConsoleFactory, tmp_path: Path
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    await linked(api, acme, "bob", BOB)
    tab = await consoles()
    await tab.sign_in(acme["X-API-Key"])
    await tab.open("alice")
    form = tab.form("send-form")
    picker = form.get_by_label("File")

    # audio: no caption, and a choice to send it as a voice note
    await picker.set_input_files({"name": "memo.ogg", "mimeType": "audio/ogg", "buffer": b"OggS" + bytes(60)})
    await expect(form.get_by_label("Send as a voice note")).to_be_visible()
    await expect(tab.page.locator("#send-message")).to_be_hidden()
    await form.get_by_label("Send as a voice note").check()
    await expect(tab.page.locator("#send-file-kind")).to_have_text("Sends as a voice note: memo.ogg, 64 B")
    await form.get_by_role("button", name="Remove the file").click()
    await expect(tab.page.locator("#send-message")).to_be_visible()
    await expect(form.get_by_label("Send as a voice note")).to_be_hidden()

    # an empty file: refused, said under the picker, nothing sent
    await form.get_by_label("To").fill(BOB)
    await picker.set_input_files({"name": "empty.png", "mimeType": "image/png", "buffer": b""})
    await form.get_by_role("button", name="Send").click()
    await expect(tab.page.locator("#send-file-error")).to_have_text("file: the file is empty")
    await expect(picker).to_have_attribute("aria-invalid", "true")
    await tab.shot("empty-file-refused")

    # a photo with a caption: sent to bob, shown to both as a picture
    photo = write_image(tmp_path / "lunch.png", (300, 200), "PNG")
    await picker.set_input_files(str(photo))
    await expect(tab.page.locator("#send-file-kind")).to_have_text(re.compile(r"^Sends as an image: lunch\.png, "))
    await expect(form.locator("#send-message-label")).to_have_text("Caption")
    await form.get_by_label("Caption").fill("Lunch is served")
    await form.get_by_role("button", name="Send").click()
    await expect(form.locator(".form-done")).to_have_text(re.compile(r"^Queued as \S+\.$"))
    await expect(picker).to_have_value("")
    sent = tab.page.locator("#message-list > li[data-type=image]")
    await expect(sent).to_have_attribute("data-direction", "outbound")
    await expect(sent.locator(".ticks")).to_have_attribute("data-status", "read")
    assert await loaded(sent.locator("img.thumb")) > 0
    await expect(sent).to_contain_text("Lunch is served")
    await tab.shot("alice-sent-a-photo")

    await tab.open("bob")
    arrived = tab.page.locator("#message-list > li[data-type=image]")
    await expect(arrived).to_have_attribute("data-direction", "inbound")
    await expect(arrived.locator(".message-peer")).to_have_text(f"From +{ALICE}")
    assert await loaded(arrived.locator("img.thumb")) > 0
    await expect(arrived).to_contain_text("Lunch is served")
    await tab.shot("bob-received-the-photo")
    page = (await api.get("/whatsapp/messages", headers=acme, params={"sessionId": "bob"})).json()
    [received] = page["messages"]
    assert received["type"] == "image" and received["message"]["image"]["caption"] == "Lunch is served"
    assert tab.script_errors() == []


# -- chats, contacts and groups -----------------------------------------------------------------------


async def chats_of(api: httpx.AsyncClient, headers: dict[str, str], session: str) -> list[dict[str, Any]]:
    answer = await api.get("/whatsapp/chats", headers=headers, params={"sessionId": session})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["chats"])


async def text_to(api: httpx.AsyncClient, headers: dict[str, str], session: str, to: str, body: str) -> None:
    answer = await api.post("/whatsapp/send", headers=headers, json={"sessionId": session, "to": to, "message": body})
    assert answer.status_code == 202, answer.text


async def test_the_chats_view_shows_conversations_both_ways_and_their_contact(
    api: httpx.AsyncClient, worker: Worker, consoles: ConsoleFactory
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    await linked(api, acme, "bob", BOB)
    carol = await api.post(
        "/whatsapp/sandbox/inbound",
        headers=acme,
        json={"sessionId": "alice", "from": CAROL, "message": "Hi, it's Carol"},
    )
    assert carol.status_code == 202, carol.text
    await text_to(api, acme, "alice", BOB, "Olá, Bob!")
    await text_to(api, acme, "bob", ALICE, "Oi, Alice!")
    await text_to(api, acme, "bob", ALICE, "Tudo bem?")

    async def alice_has_both() -> bool:
        listed = await chats_of(api, acme, "alice")
        return len(listed) == 2 and listed[0]["unreadCount"] == 2

    await eventually(alice_has_both, within=20.0)
    with_bob, with_carol = await chats_of(api, acme, "alice")
    assert with_bob["chat"] == BOB and with_carol["chat"] == CAROL and with_carol["unreadCount"] == 1

    tab = await consoles()
    await tab.sign_in(acme["X-API-Key"])
    await tab.open("alice")
    chat_list = tab.page.locator("#chat-list > li")
    await expect(chat_list).to_have_count(2)
    await expect(chat_list.nth(0)).to_have_attribute("data-chat", with_bob["id"])  # newest activity first
    await expect(chat_list.nth(1)).to_have_attribute("data-chat", with_carol["id"])
    bob_item = tab.page.locator(f'#chat-list > li[data-chat="{with_bob["id"]}"]')
    carol_item = tab.page.locator(f'#chat-list > li[data-chat="{with_carol["id"]}"]')
    await expect(bob_item.locator(".unread")).to_have_text("2")
    await expect(bob_item.locator(".chat-last")).to_have_text("Tudo bem?")
    await expect(carol_item.locator(".unread")).to_have_text("1")
    await expect(carol_item.locator(".chat-last")).to_have_text("Hi, it's Carol")
    await tab.shot("alice-chats")

    # the conversation with bob, both ways; opening it reads it
    await bob_item.get_by_role("button").click()
    view = tab.page.locator("#chat-view")
    await expect(view.locator("#chat-title")).to_be_visible()
    conversation = view.locator("#chat-messages > li")
    await expect(conversation).to_have_count(3)
    await expect(conversation.nth(0)).to_have_attribute("data-direction", "outbound")
    await expect(conversation.nth(0)).to_contain_text("Olá, Bob!")
    await expect(conversation.nth(0).locator(".message-peer")).to_have_text(f"To +{BOB}")
    await expect(conversation.nth(1)).to_have_attribute("data-direction", "inbound")
    await expect(conversation.nth(1).locator(".message-peer")).to_have_text(re.compile(rf"^From .*\+{BOB}"))
    await expect(conversation.nth(2)).to_contain_text("Tudo bem?")
    await expect(view).not_to_contain_text("Hi, it's Carol")
    await expect(bob_item).to_have_attribute("data-unread", "0")
    await expect(bob_item.locator(".unread")).to_be_hidden()
    await expect(carol_item.locator(".unread")).to_have_text("1")
    assert (await chats_of(api, acme, "alice"))[0]["unreadCount"] == 0

    # live: carol writes again and moves to the top; bob's next message shows in the open chat, read at once
    again = await api.post(
        "/whatsapp/sandbox/inbound", headers=acme, json={"sessionId": "alice", "from": CAROL, "message": "Still there?"}
    )
    assert again.status_code == 202, again.text
    await expect(chat_list.nth(0)).to_have_attribute("data-chat", with_carol["id"])
    await expect(carol_item.locator(".unread")).to_have_text("2")
    await text_to(api, acme, "bob", ALICE, "Sim!")
    await expect(conversation).to_have_count(4)
    await expect(conversation.nth(3)).to_contain_text("Sim!")
    await expect(chat_list.nth(0)).to_have_attribute("data-chat", with_bob["id"])
    await expect(bob_item).to_have_attribute("data-unread", "0")

    # bob's contact details: both ids, the picture's link, block and unblock
    contact = (await api.get(f"/whatsapp/contacts/{with_bob['id']}", headers=acme)).json()
    assert contact["jid"] == f"{BOB}@s.whatsapp.net" and contact["lid"], contact
    await view.get_by_role("button", name="Contact details").click()
    about = tab.page.locator("#chat-about")
    await expect(about).to_contain_text(contact["jid"])
    await expect(about).to_contain_text(contact["lid"])
    if contact["pictureUrl"]:  # the sandbox's pictures are on a host the page may not load: a link, no image
        await expect(about.get_by_role("link", name="Profile picture")).to_have_attribute("href", contact["pictureUrl"])
        await expect(about.locator("img")).to_have_count(0)
    await tab.page.screenshot(path="/tmp/console-chats.png", full_page=True)
    await tab.shot("alice-chat-with-bob-and-his-details")
    await about.get_by_role("button", name="Block", exact=True).click()
    await expect(about.get_by_role("button", name="Unblock", exact=True)).to_be_visible()
    await expect(about.locator("dt:text-is('Blocked') + dd")).to_have_text("yes")
    assert (await api.get(f"/whatsapp/contacts/{with_bob['id']}", headers=acme)).json()["blocked"] is True
    await about.get_by_role("button", name="Unblock", exact=True).click()
    await expect(about.get_by_role("button", name="Block", exact=True)).to_be_visible()
    assert (await api.get(f"/whatsapp/contacts/{with_bob['id']}", headers=acme)).json()["blocked"] is False

    # changes of a chat's state (here through the API) reach the list by their chat-update events
    for chat, action in ((with_carol, "pin"), (with_bob, "mute"), (with_bob, "archive")):
        changed = await api.post(f"/whatsapp/chats/{chat['id']}/{action}", headers=acme)
        assert changed.status_code == 200, changed.text
    await expect(carol_item.locator(".mark[data-mark=pinned]")).to_be_visible()
    await expect(bob_item.locator(".mark[data-mark=muted]")).to_have_attribute("title", "Muted")
    await expect(bob_item.locator(".mark[data-mark=archived]")).to_be_visible()
    await expect(carol_item.locator(".mark[data-mark=muted]")).to_have_count(0)
    await tab.shot("alice-chats-pinned-muted-archived")
    assert tab.script_errors() == []


async def test_a_groups_chat_shows_its_info_and_participants(
    api: httpx.AsyncClient, worker: Worker, consoles: ConsoleFactory
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    await linked(api, acme, "bob", BOB)
    made = await api.post(
        "/whatsapp/groups", headers=acme, json={"sessionId": "alice", "subject": "Lunch club", "participants": [BOB]}
    )
    assert made.status_code == 201, made.text
    group = made.json()["group"]["id"]
    described = await api.patch(
        f"/whatsapp/groups/{group}", headers=acme, json={"sessionId": "alice", "description": "Fridays at noon"}
    )
    assert described.status_code == 200, described.text
    await text_to(api, acme, "alice", group, "Pizza today?")

    async def bob_has_it() -> bool:
        return any(chat["jid"] == group for chat in await chats_of(api, acme, "bob"))

    await eventually(bob_has_it, within=20.0)
    [in_group] = [chat for chat in await chats_of(api, acme, "bob") if chat["jid"] == group]
    assert in_group["isGroup"] is True

    tab = await consoles()
    await tab.sign_in(acme["X-API-Key"])
    await tab.open("bob")
    item = tab.page.locator(f'#chat-list > li[data-chat="{in_group["id"]}"]')
    await expect(item.locator(".mark[data-mark=group]")).to_be_visible()
    await expect(item.locator(".chat-last")).to_have_text("Pizza today?")
    await item.get_by_role("button").click()
    view = tab.page.locator("#chat-view")
    await expect(view.locator("#chat-messages > li")).to_have_count(1)
    await expect(view.locator("#chat-messages > li").first).to_have_attribute("data-direction", "inbound")
    await expect(view.locator(".message-peer")).to_have_text(f"From +{ALICE} in {group}")
    await view.get_by_role("button", name="Group info").click()
    about = tab.page.locator("#chat-about")
    await expect(about.locator("h5")).to_have_text("Lunch club")
    await expect(view.locator("#chat-title")).to_have_text("Lunch club")
    await expect(about.locator(".group-description")).to_have_text("Fridays at noon")
    people = about.get_by_role("list", name="Participants").locator("li")
    await expect(people).to_have_count(2)
    creator = about.locator(f'li[data-jid="{ALICE}@s.whatsapp.net"]')
    await expect(creator.locator(".mark[data-mark=admin]")).to_have_text("creator, admin")
    await expect(about.locator(f'li[data-jid="{BOB}@s.whatsapp.net"] .mark')).to_have_count(0)
    await tab.page.screenshot(path="/tmp/console-group.png", full_page=True)
    await tab.shot("bob-group-info")
    await tab.page.set_viewport_size({"width": 390, "height": 844})  # a phone: everything in one column
    await tab.shot("bob-group-info-on-a-phone")
    assert tab.script_errors() == []


# -- long lists, a page at a time ---------------------------------------------------------------------

PAGE = 50  # what the console reads per page (console.js PAGE)


async def everything(api: httpx.AsyncClient, headers: dict[str, str], path: str, key: str) -> list[dict[str, Any]]:
    """Every item of a listing, in the API's order, read in one page."""
    params = {"sessionId": "alice"} if path in ("/whatsapp/chats", "/whatsapp/messages") else {}
    answer = await api.get(path, headers=headers, params={**params, "limit": 500})
    assert answer.status_code == 200, answer.text
    assert answer.json()["nextCursor"] is None
    return list(answer.json()[key])


async def shown(items: Locator, attribute: str) -> list[str]:
    """The `attribute` of each item of a list on screen, top to bottom."""
    values = await items.evaluate_all("(items, name) => items.map((item) => item.getAttribute(name))", attribute)
    return [value or "" for value in values]


async def test_long_lists_load_older_pages_each_item_once_in_order_and_stay_live(
    api: httpx.AsyncClient, worker: Worker, consoles: ConsoleFactory
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    gate = asyncio.Semaphore(8)

    async def inbound(sender: str, body: dict[str, Any]) -> None:
        async with gate:
            answer = await api.post(
                "/whatsapp/sandbox/inbound", headers=acme, json={"sessionId": "alice", "from": sender, **body}
            )
        assert answer.status_code == 202, answer.text

    # 55 chats of one message each, then carol's chat of 56 messages: 56 chats, 111 messages (3 pages)
    strangers = [f"55119880{number:05d}" for number in range(55)]
    await asyncio.gather(*(inbound(number, {"message": f"Hello from {number}"}) for number in strangers))
    await asyncio.gather(*(inbound(CAROL, {"message": f"Carol {number:02d}"}) for number in range(56)))

    async def all_stored() -> bool:
        listed = await api.get("/whatsapp/messages", headers=acme, params={"sessionId": "alice", "limit": 500})
        return len(listed.json()["messages"]) == 111

    await eventually(all_stored, within=60.0)
    chats = await everything(api, acme, "/whatsapp/chats", "chats")
    assert len(chats) == 56
    [with_carol] = [chat for chat in chats if chat["chat"] == CAROL]

    tab = await consoles()
    await tab.sign_in(acme["X-API-Key"])
    await tab.open("alice")

    # the chats: a page, then the rest once; each chat once, newest activity first
    chat_items = tab.page.locator("#chat-list > li")
    more_chats = tab.page.get_by_role("button", name="Load more chats")
    await expect(chat_items).to_have_count(PAGE)
    await tab.shot("chats-first-page")
    await more_chats.click()
    await expect(chat_items).to_have_count(56)
    await expect(more_chats).to_be_hidden()
    await tab.shot("chats-second-page")
    assert await shown(chat_items, "data-chat") == [chat["id"] for chat in chats]

    # the session's messages: oldest at the top, two older pages added above, each message once
    panel = tab.page.locator("#messages-panel")
    message_items = tab.page.locator("#message-list > li")
    older = panel.get_by_role("button", name="Load older messages")
    await expect(message_items).to_have_count(PAGE)
    await older.click()
    await expect(message_items).to_have_count(2 * PAGE)
    await tab.shot("messages-second-page")
    await older.click()
    await expect(message_items).to_have_count(111)
    await expect(older).to_be_hidden()
    messages = await everything(api, acme, "/whatsapp/messages", "messages")
    assert await shown(message_items, "data-message-id") == [m["messageId"] for m in reversed(messages)]

    # carol's conversation: its newest page, then its first six messages above it
    await tab.page.locator(f'#chat-list > li[data-chat="{with_carol["id"]}"]').get_by_role("button").click()
    view = tab.page.locator("#chat-view")
    conversation = view.locator("#chat-messages > li")
    await expect(conversation).to_have_count(PAGE)
    await expect(conversation.first).to_contain_text("Carol")
    await view.get_by_role("button", name="Load older messages").click()
    await expect(conversation).to_have_count(56)
    await expect(view.get_by_role("button", name="Load older messages")).to_be_hidden()
    carols = await everything(api, acme, f"/whatsapp/chats/{with_carol['id']}/messages", "messages")
    assert await shown(conversation, "data-message-id") == [m["messageId"] for m in reversed(carols)]
    await tab.shot("every-page-loaded")

    # live: the oldest chat (loaded from the second page) wakes up, a new chat begins, carol writes again:
    # each comes in at the newest end, once; what was loaded stays
    waking = chats[-1]
    await inbound(waking["chat"], {"message": "Still here"})
    await inbound(BOB, {"message": "A new chat"})
    await inbound(CAROL, {"message": "Carol again"})
    await expect(chat_items.nth(2)).to_have_attribute("data-chat", waking["id"])
    await expect(chat_items).to_have_count(57)
    await expect(message_items).to_have_count(114)
    await expect(conversation).to_have_count(57)
    await expect(conversation.last).to_contain_text("Carol again")
    chats = await everything(api, acme, "/whatsapp/chats", "chats")
    assert [chat["chat"] for chat in chats[:3]] == [CAROL, BOB, waking["chat"]]
    assert await shown(chat_items, "data-chat") == [chat["id"] for chat in chats]
    messages = await everything(api, acme, "/whatsapp/messages", "messages")
    assert await shown(message_items, "data-message-id") == [m["messageId"] for m in reversed(messages)]
    carols = await everything(api, acme, f"/whatsapp/chats/{with_carol['id']}/messages", "messages")
    assert await shown(conversation, "data-message-id") == [m["messageId"] for m in reversed(carols)]

    # changes to items loaded from an older page reach them too: a reaction to carol's first message, a pin
    first = carols[-1]
    await inbound(CAROL, {"type": "reaction", "reaction": {"message_id": first["whatsappMessageId"], "emoji": "👍"}})
    for where in (message_items, conversation):
        reacted = where.and_(tab.page.locator(f'[data-message-id="{first["messageId"]}"]'))
        await expect(reacted.locator(".reactions .chip-emoji")).to_have_text("👍")
    oldest_chat = chats[-1]
    assert (await api.post(f"/whatsapp/chats/{oldest_chat['id']}/pin", headers=acme)).status_code == 200
    pinned = tab.page.locator(f'#chat-list > li[data-chat="{oldest_chat["id"]}"]')
    await expect(pinned.locator(".mark[data-mark=pinned]")).to_be_visible()
    await expect(chat_items).to_have_count(57)
    await expect(message_items).to_have_count(114)  # the reaction shows on its message, not as one of its own
    await tab.shot("live-changes-to-older-items")
    assert tab.script_errors() == []


async def test_more_than_a_page_arriving_at_once_joins_what_was_loaded(
    api: httpx.AsyncClient, worker: Worker, consoles: ConsoleFactory
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    gate = asyncio.Semaphore(8)

    async def inbound(sender: str, text: str) -> None:
        async with gate:
            answer = await api.post(
                "/whatsapp/sandbox/inbound", headers=acme, json={"sessionId": "alice", "from": sender, "message": text}
            )
        assert answer.status_code == 202, answer.text

    async def stored(count: int) -> bool:
        listed = await api.get("/whatsapp/messages", headers=acme, params={"sessionId": "alice", "limit": 500})
        return len(listed.json()["messages"]) == count

    await asyncio.gather(*(inbound(f"55119881{number:05d}", f"Early {number}") for number in range(55)))
    await eventually(lambda: stored(55), within=60.0)
    tab = await consoles()
    await tab.sign_in(acme["X-API-Key"])
    await tab.open("alice")
    chat_items = tab.page.locator("#chat-list > li")
    message_items = tab.page.locator("#message-list > li")
    await expect(chat_items).to_have_count(PAGE)

    # an older page that cannot be read says so; the button stays for another try
    async def unavailable(route: Route) -> None:
        problem = {"title": "Service Unavailable", "status": 503, "detail": "the database is unavailable"}
        await route.fulfill(status=503, content_type="application/problem+json", json=problem)

    older_chats = re.compile(r"/whatsapp/chats\?.*cursor=")
    await tab.page.route(older_chats, unavailable)
    more_chats = tab.page.get_by_role("button", name="Load more chats")
    await more_chats.click()
    await expect(tab.page.locator("#chats-error")).to_have_text(
        "Older ones could not be loaded: the database is unavailable"
    )
    await expect(more_chats).to_be_enabled()
    await expect(chat_items).to_have_count(PAGE)
    await tab.page.unroute(older_chats, unavailable)
    await more_chats.click()
    await expect(tab.page.locator("#chats-error")).to_be_empty()
    await tab.page.locator("#messages-panel").get_by_role("button", name="Load older messages").click()
    await expect(chat_items).to_have_count(55)
    await expect(message_items).to_have_count(55)

    # 55 new chats arrive while the console's reads are held up: its next look finds more than a page of news
    released = asyncio.Event()

    async def hold(route: Route) -> None:
        await released.wait()
        await route.continue_()

    await tab.page.route(re.compile(r"/whatsapp/(messages|chats)\?"), hold)
    await asyncio.gather(*(inbound(f"55119882{number:05d}", f"Late {number}") for number in range(55)))
    await eventually(lambda: stored(110), within=60.0)
    released.set()
    await expect(chat_items).to_have_count(110)
    await expect(message_items).to_have_count(110)
    chats = await everything(api, acme, "/whatsapp/chats", "chats")
    assert await shown(chat_items, "data-chat") == [chat["id"] for chat in chats]
    messages = await everything(api, acme, "/whatsapp/messages", "messages")
    assert await shown(message_items, "data-message-id") == [m["messageId"] for m in reversed(messages)]
    await expect(tab.page.get_by_role("button", name="Load more chats")).to_be_hidden()
    await tab.shot("caught-up")
    assert tab.script_errors() == []
