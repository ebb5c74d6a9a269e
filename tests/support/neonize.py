"""neonize's side of the whatsmeow engine, offline: protobufs as Go sends them, and a stand-in Go library.

Shared by the whatsmeow engine tests and the engine contract suite.
"""

from __future__ import annotations

import ctypes
import importlib
import queue
import threading
from typing import Any

from zapgate.engines.whatsmeow import pb, wa

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


class FakeGo:
    """neonize's Go library as far as the engine reaches it: `Neonize` calls back as Go does (the device event,
    then its event loop over a buffer, main.go:2526-2550), `Stop` ends that loop and drops what is still
    buffered (main.go:587-604), `Disconnect` only closes the socket."""

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

    def GetAllDevices(self, _db: bytes, _cb: Any) -> bytes:
        self.device_lookups += 1
        return self.devices
