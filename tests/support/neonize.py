"""neonize's side of the whatsmeow engine, offline: protobufs as Go sends them, and a stand-in Go library.

Shared by the whatsmeow engine tests and the engine contract suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import importlib
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from zapgate.engines.base import EngineEvent, SessionRef, StartMode, StartRequest
from zapgate.engines.whatsmeow import WhatsmeowEngine, _Session, pb, wa

# imported through the engine first: neonize's own import leaks a popen, which the engine's import absorbs
EVENT_TO_INT: dict[Any, int] = importlib.import_module("neonize.events").EVENT_TO_INT


def jid(user: str, server: str = "s.whatsapp.net", device: int = 0) -> pb.JID:
    return pb.JID(User=user, Server=server, Device=device, RawAgent=0, Integrator=0)


def empty_jid() -> pb.JID:
    return pb.JID(User="", Server="", Device=0, RawAgent=0, Integrator=0)


def source(chat: pb.JID, sender: pb.JID, *, alt: pb.JID | None = None, from_me: bool = False, group: bool = False):
    return pb.MessageSource(
        Chat=chat,
        Sender=sender,
        IsFromMe=from_me,
        IsGroup=group,
        SenderAlt=alt if alt is not None and not from_me else empty_jid(),
        RecipientAlt=alt if alt is not None and from_me else empty_jid(),
        BroadcastListOwner=empty_jid(),
    )


def message(source: pb.MessageSource, content: wa.Message, message_id: str = "3EB0MSG") -> pb.Message:
    info = pb.MessageInfo(MessageSource=source, ID=message_id, Pushname="Ana", Timestamp=1_790_000_000_000)
    return pb.Message(Info=info, Message=content)


def _timings() -> pb.MessageDebugTimings:
    return pb.MessageDebugTimings(
        Queue=0, Marshal=0, GetParticipants=0, GetDevices=0, GroupEncrypt=0, PeerEncrypt=0, Send=0, Resp=0, Retry=0
    )


class FakeGo:
    """neonize's Go library as far as the engine reaches it: `Neonize` calls back as Go does (the device event,
    then its event loop over a buffer, main.go:2526-2550), `Stop` ends that loop and drops what is still
    buffered (main.go:587-604), `Disconnect` only closes the socket.

    Sends, uploads, downloads and poll votes answer as the Go exports do (main.go:416-427, :473-520,
    :1185-1202, :2216-2239, :2414-2431) and remember what neonize's Python client handed them, serialised.
    """

    def __init__(self, *, stop_hangs: bool = False, call_hangs: bool = False, dial_error: bytes = b"") -> None:
        self.stop_hangs = stop_hangs
        self.call_hangs = call_hangs
        self.dial_error = dial_error
        self.release = threading.Event()  # lets hung calls return when the test ends
        self.stopped = threading.Event()
        self.disconnected = threading.Event()
        self.delivered_me = threading.Event()
        self.buffer: queue.Queue[tuple[int, bytes]] = queue.Queue()
        self.delivered: list[int] = []
        self.dropped = 0
        self.props: bytes = b""
        self.device_lookups = 0
        self.devices = b""
        self.sent: list[tuple[pb.JID, wa.Message]] = []  # what SendMessage was handed
        self.send_error = ""
        self.uploads: list[tuple[bytes, int]] = []  # the file and neonize's MediaType number
        self.upload_error = ""
        self.upload_hangs = False
        self.downloads: list[wa.Message] = []
        self.download_data = b""
        self.download_error = ""
        self.vote_builds: list[tuple[pb.MessageInfo, list[str]]] = []
        self.vote_error = ""
        self.decrypted: list[pb.Message] = []
        self.vote = wa.PollVoteMessage()  # what DecryptPollVote answers
        self.decrypt_error = ""
        self.pictures: list[tuple[pb.JID, pb.GetProfilePictureParams]] = []  # what GetProfilePicture was asked
        self.picture = pb.ProfilePictureInfo()  # what it answers (empty: whatsmeow found none)
        self.picture_error = ""
        self.blocklist: list[tuple[pb.JID, str]] = []  # what UpdateBlocklist was asked: (JID, action)
        self.blocklist_reads = 0  # GetBlocklist calls
        # chats and presence (issue 14): what SubscribePresence and SendPresence were handed
        self.subscribed: list[pb.JID] = []
        self.presences: list[bytes] = []
        self.presence_error = b""
        self.lids: dict[str, pb.JID] = {}  # phone user -> LID, as whatsmeow's store keeps them
        self.on_whatsapp: dict[str, bool] = {}  # "+digits" -> IsIn

    def Neonize(self, *args: Any) -> bytes:
        uuid, event_cb, props, props_size = args[1], args[8], args[12], args[13]
        self.props = bytes(props[:props_size])
        if self.dial_error:
            return self.dial_error
        if b"slow" in bytes(uuid):
            self.release.wait()  # a dial into a network that swallows packets: no callback until it gives up
            return b"dial timed out"
        me = pb.Device(JID=jid("5511999999999", device=7), LID=jid("99887766", "lid"), Initialized=True)
        self._deliver(event_cb, uuid, 0, me.SerializePartialToString())
        self.delivered_me.set()
        while not self.stopped.is_set():
            try:
                code, data = self.buffer.get(timeout=0.01)
            except queue.Empty:
                continue
            if self.stopped.is_set():
                self.buffer.put((code, data))
                break
            self._deliver(event_cb, uuid, code, data)
            self.delivered.append(code)
        self.dropped = self.buffer.qsize()  # Stop forgets the channel: these are never handed over
        return b""

    def shut_down(self) -> None:
        """End every call still in this library (hung ones included): a test's Go threads must not outlive it.

        neonize runs `Neonize` on a thread that is not a daemon, so one left looping keeps pytest from exiting.
        """
        self.release.set()
        self.stopped.set()

    def _deliver(self, event_cb: Any, uuid: bytes, code: int, data: bytes) -> None:
        buffer = ctypes.create_string_buffer(data, len(data))
        event_cb(uuid, ctypes.addressof(buffer), len(data), code)

    def push(self, event: Any) -> None:
        self.buffer.put((EVENT_TO_INT[type(event)], event.SerializePartialToString()))

    def Stop(self, _uuid: bytes) -> None:
        if self.stop_hangs:
            self.release.wait()  # Go stuck: FetchMe spinning, or Disconnect behind a hung dial
        self.stopped.set()

    def Disconnect(self, _uuid: bytes) -> None:
        self.disconnected.set()

    def Logout(self, _uuid: bytes) -> bytes:
        if self.call_hangs:
            self.release.wait()
        return b""

    def SendChatPresence(self, *_args: Any) -> bytes:
        if self.call_hangs:
            self.release.wait()
        return b""

    def SubscribePresence(self, _uuid: bytes, jid_buf: bytes, _size: int) -> bytes:
        self.subscribed.append(pb.JID.FromString(jid_buf))
        return self.presence_error

    def SendPresence(self, _uuid: bytes, presence: bytes) -> bytes:
        self.presences.append(presence)
        return self.presence_error

    def GetAllDevices(self, _db: bytes, _cb: Any) -> bytes:
        self.device_lookups += 1
        return self.devices

    def SendMessage(self, _uuid: bytes, to: bytes, _to_size: int, message: bytes, _size: int) -> bytes:
        if self.call_hangs:
            self.release.wait()
        if self.send_error:
            return pb.SendMessageReturnFunction(Error=self.send_error).SerializeToString()
        self.sent.append((pb.JID.FromString(to), wa.Message.FromString(message)))
        response = pb.SendResponse(
            Timestamp=1_790_000_002, ID=f"3EB0SENT{len(self.sent)}", ServerID=0, DebugTimings=_timings()
        )
        return pb.SendMessageReturnFunction(SendResponse=response).SerializeToString()

    def Upload(self, _uuid: bytes, data: bytes, size: int, media_type: int) -> bytes:
        if self.upload_hangs:
            self.release.wait()
        self.uploads.append((bytes(data[:size]), media_type))
        if self.upload_error:
            return pb.UploadReturnFunction(Error=self.upload_error).SerializeToString()
        path = f"/v/t62.7118-24/{len(self.uploads)}.enc?ccb=11-4"
        response = pb.UploadResponse(
            url="https://mmg.whatsapp.net" + path,
            DirectPath=path,
            Handle="",
            MediaKey=b"K" * 32,
            FileEncSHA256=b"E" * 32,
            FileSHA256=hashlib.sha256(data[:size]).digest(),
            FileLength=size,
        )
        return pb.UploadReturnFunction(UploadResponse=response).SerializeToString()

    def DownloadAny(self, _uuid: bytes, message: bytes, _size: int) -> bytes:
        self.downloads.append(wa.Message.FromString(message))
        if self.download_error:
            return pb.DownloadReturnFunction(Error=self.download_error).SerializeToString()
        return pb.DownloadReturnFunction(Binary=self.download_data).SerializeToString()

    def BuildPollVote(self, _uuid: bytes, info: bytes, _info_size: int, names: bytes, _names_size: int) -> bytes:
        poll = pb.MessageInfo.FromString(info)  # fails like Go would on a missing required field
        self.vote_builds.append((poll, list(pb.ArrayString.FromString(names).data)))
        if self.vote_error:
            return pb.BuildPollVoteReturnFunction(Error=self.vote_error).SerializeToString()
        update = wa.PollUpdateMessage(
            pollCreationMessageKey={"remoteJID": "x", "fromMe": poll.MessageSource.IsFromMe, "ID": poll.ID},
            vote=wa.PollEncValue(encPayload=b"sealed", encIV=b"iv" * 6),
            senderTimestampMS=1_790_000_002_000,
        )
        return pb.BuildPollVoteReturnFunction(PollVote=wa.Message(pollUpdateMessage=update)).SerializeToString()

    def DecryptPollVote(self, _uuid: bytes, message: bytes, _size: int) -> bytes:
        self.decrypted.append(pb.Message.FromString(message))
        if self.decrypt_error:
            return pb.ReturnFunctionWithError(Error=self.decrypt_error).SerializeToString()
        return pb.ReturnFunctionWithError(PollVoteMessage=self.vote).SerializeToString()

    def GetProfilePicture(self, _uuid: bytes, jid_buf: bytes, _size: int, extra: bytes, _extra_size: int) -> bytes:
        self.pictures.append((pb.JID.FromString(jid_buf), pb.GetProfilePictureParams.FromString(extra)))
        if self.picture_error:
            return pb.GetProfilePictureReturnFunction(Error=self.picture_error).SerializeToString()
        return pb.GetProfilePictureReturnFunction(Picture=self.picture).SerializeToString()

    def UpdateBlocklist(self, _uuid: bytes, jid_buf: bytes, _size: int, action: bytes) -> bytes:
        asked = pb.JID.FromString(jid_buf)
        self.blocklist.append((asked, action.decode()))
        blocked = [jid for jid, act in self.blocklist if act == "block"]
        return pb.GetBlocklistReturnFunction(Blocklist=pb.Blocklist(DHash="1", JIDs=blocked)).SerializeToString()

    def GetBlocklist(self, _uuid: bytes) -> bytes:
        self.blocklist_reads += 1
        blocked = [jid for jid, act in self.blocklist if act == "block"]
        return pb.GetBlocklistReturnFunction(Blocklist=pb.Blocklist(DHash="2", JIDs=blocked)).SerializeToString()

    def GetLIDFromPN(self, _uuid: bytes, jid_buf: bytes, _size: int) -> bytes:
        asked = pb.JID.FromString(jid_buf)
        found = self.lids.get(asked.User, empty_jid())  # the empty JID when unknown (lidmap.go:96-115)
        return pb.GetJIDFromStoreReturnFunction(Jid=found).SerializeToString()

    def IsOnWhatsApp(self, _uuid: bytes, numbers: bytes, _size: int) -> bytes:
        answers = [
            pb.IsOnWhatsAppResponse(Query=number, JID=jid(number.lstrip("+")), IsIn=self.on_whatsapp[number])
            for number in numbers.decode().split(" ")
            if number in self.on_whatsapp
        ]
        if not answers:
            return pb.IsOnWhatsAppReturnFunction(Error="Function returned nothing.").SerializeToString()
        return pb.IsOnWhatsAppReturnFunction(IsOnWhatsAppResponse=answers).SerializeToString()


class Fed:
    """A session's neonize client, fed events the way Go delivers them (through `client.event.execute`)."""

    def __init__(self, engine: WhatsmeowEngine, request: StartRequest) -> None:
        self.session = _Session(request=request, dsn=":memory:")
        self.client = engine._new_client(self.session, restore=False)

    def event(self, message: Any) -> None:
        self.raw(message.SerializePartialToString(), EVENT_TO_INT[type(message)])

    def raw(self, data: bytes, code: int) -> None:
        buffer = ctypes.create_string_buffer(data, len(data))
        self.client.event.execute(1, ctypes.addressof(buffer), len(data), code)

    def me(self, jid: pb.JID, lid: pb.JID) -> None:
        data = pb.Device(JID=jid, LID=lid, Platform="", BussinessName="", PushName="", Initialized=True)
        raw = data.SerializePartialToString()
        buffer = ctypes.create_string_buffer(raw, len(raw))
        self.client.event.execute(1, ctypes.addressof(buffer), len(raw), 0)

    def qr(self, code: str) -> None:
        buffer = ctypes.create_string_buffer(code.encode())
        self.client._NewClient__onQr(1, ctypes.addressof(buffer))


async def until(predicate: Callable[[], object], seconds: float = 10.0) -> None:
    """Wait until `predicate()` is true (AssertionError after `seconds`)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def live_engine(
    ref: SessionRef, fake: FakeGo, *, ack: bool = True
) -> AsyncIterator[tuple[WhatsmeowEngine, list[EngineEvent]]]:
    """A whatsmeow engine with the session `ref` connected over `fake` (installed as neonize's Go library by the
    caller), and the events it reports; with `ack`, each is acknowledged as the worker does once stored."""
    events: list[EngineEvent] = []

    def store(event: EngineEvent) -> None:
        events.append(event)
        done = getattr(event, "ack", None)
        if ack and done is not None:
            done()

    engine = WhatsmeowEngine(store, lambda _client: ":memory:", stop_timeout=3.0)
    await engine.start(StartRequest(ref, StartMode.QR))
    await asyncio.to_thread(fake.delivered_me.wait, 10)
    await until(lambda: (s := engine._session(ref)) is not None and s.go_live and s.lid is not None)
    try:
        yield engine, events
    finally:
        try:
            async with asyncio.timeout(10):
                await engine.close()
        finally:
            fake.shut_down()
