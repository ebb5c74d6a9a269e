"""The real type of a file, from its first bytes: the client's word (MIME, file name) is never trusted.

A small magic table of our own rather than a library: `filetype` (pure Python) tells neither Opus from Vorbis
in Ogg nor animated from static WebP, and knows Office files only by their extension inside the zip; libmagic
(`python-magic`) is a system library a user would have to install. What WhatsApp needs is a few dozen types,
each told apart below in a few lines.

`sniff(head)` looks at the first bytes (read at least SNIFF_BYTES); `sniff_file(path)` also reads a zip's
central directory at the end of the file, where Office files list their parts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

SNIFF_BYTES = 8 * 1024  # read at least this much of a file's head
_ZIP_TAIL = 64 * 1024  # bytes read from the end of a zip to find its central directory

OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Sniffed:
    """A file type told from bytes: MIME type, usual extension (no dot), and whether it moves."""

    mime: str
    extension: str
    animated: bool = False

    @property
    def family(self) -> str:
        """The MIME type's top level: image, video, audio, text, application."""
        return self.mime.split("/", 1)[0]


UNKNOWN = Sniffed(OCTET_STREAM, "bin")

_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
_ODF_EXTENSIONS = {"text": "odt", "spreadsheet": "ods", "presentation": "odp"}
_OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

_PREFIXES: list[tuple[bytes, Sniffed]] = [
    (b"\xff\xd8\xff", Sniffed("image/jpeg", "jpg")),
    (b"GIF87a", Sniffed("image/gif", "gif")),
    (b"GIF89a", Sniffed("image/gif", "gif")),
    (b"II*\x00", Sniffed("image/tiff", "tif")),
    (b"MM\x00*", Sniffed("image/tiff", "tif")),
    (b"#!AMR-WB\n", Sniffed("audio/amr-wb", "awb")),
    (b"#!AMR\n", Sniffed("audio/amr", "amr")),
    (b"fLaC", Sniffed("audio/flac", "flac")),
    (b"%PDF-", Sniffed("application/pdf", "pdf")),
    (_OLE_SIGNATURE, Sniffed("application/x-ole-storage", "ole")),
    (b"Rar!\x1a\x07", Sniffed("application/vnd.rar", "rar")),
    (b"7z\xbc\xaf\x27\x1c", Sniffed("application/x-7z-compressed", "7z")),
    (b"\x1f\x8b", Sniffed("application/gzip", "gz")),
]


def sniff(head: bytes) -> Sniffed | None:
    """Tell a file's type from its first bytes (at least SNIFF_BYTES of them, or the whole file).

    Returns None when nothing is recognised (callers send it as `application/octet-stream`); valid UTF-8
    without NUL bytes is text (`text/plain`, or `text/csv` when its lines split alike on commas or semicolons).
    """
    for prefix, sniffed in _PREFIXES:
        if head.startswith(prefix):
            return sniffed
    for check in (_png, _riff, _ftyp, _ogg, _ebml, _zip, _bmp, _mpeg_audio):
        found = check(head)
        if found is not None:
            return found
    if b"%PDF-" in head[:1024]:  # PDF allows junk before its header
        return Sniffed("application/pdf", "pdf")
    return _text(head)


def sniff_file(path: Path) -> Sniffed:
    """Tell the type of the file at `path` (a zip's central directory too); UNKNOWN when nothing matches."""
    with path.open("rb") as file:
        head = file.read(SNIFF_BYTES)
        found = sniff(head)
        if found is not None and found.mime == "application/zip":
            size = file.seek(0, 2)
            file.seek(max(0, size - _ZIP_TAIL))
            found = _zip_kind(_zip_names(head) + _central_directory_names(file.read()))
    return found or UNKNOWN


def _png(head: bytes) -> Sniffed | None:
    if not head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    # An APNG has an acTL chunk before its first IDAT.
    offset = 8
    while offset + 8 <= len(head):
        length, chunk = struct.unpack(">I4s", head[offset : offset + 8])
        if chunk == b"acTL":
            return Sniffed("image/png", "png", animated=True)
        if chunk == b"IDAT":
            break
        offset += 12 + length
    return Sniffed("image/png", "png")


def _riff(head: bytes) -> Sniffed | None:
    if not head.startswith(b"RIFF") or len(head) < 12:
        return None
    form = head[8:12]
    if form == b"WAVE":
        return Sniffed("audio/wav", "wav")
    if form == b"AVI ":
        return Sniffed("video/x-msvideo", "avi")
    if form != b"WEBP":
        return None
    # VP8X carries flags; bit 1 of its first byte says "animation" (RFC 9649, section 2.7).
    animated = head[12:16] == b"VP8X" and len(head) > 20 and bool(head[20] & 0x02)
    return Sniffed("image/webp", "webp", animated=animated)


_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


def _ftyp(head: bytes) -> Sniffed | None:
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    box_size = struct.unpack(">I", head[:4])[0]
    major = head[8:12]
    brands = {major} | {head[i : i + 4] for i in range(16, min(box_size, len(head)) - 3, 4)}
    if major in _AUDIO_BRANDS:
        return Sniffed("audio/mp4", "m4a")
    if major == b"qt  ":
        return Sniffed("video/quicktime", "mov")
    if major.startswith((b"3gp", b"3gg", b"3gs")):
        return Sniffed("video/3gpp", "3gp")
    if major.startswith(b"3g2"):
        return Sniffed("video/3gpp2", "3g2")
    if major in {b"avif", b"avis"}:
        return Sniffed("image/avif", "avif")
    if major in _HEIF_BRANDS or (brands & _HEIF_BRANDS and not brands & {b"isom", b"mp41", b"mp42"}):
        return Sniffed("image/heic", "heic")
    return Sniffed("video/mp4", "mp4")


def _ogg(head: bytes) -> Sniffed | None:
    if not head.startswith(b"OggS") or len(head) < 28:
        return None
    # The first page holds the first stream's identification header, after the segment table.
    payload = head[27 + head[26] :]
    if payload.startswith(b"OpusHead"):
        return Sniffed("audio/ogg; codecs=opus", "ogg")
    if payload.startswith(b"\x01vorbis"):
        return Sniffed("audio/ogg; codecs=vorbis", "ogg")
    if payload.startswith(b"\x7fFLAC"):
        return Sniffed("audio/ogg; codecs=flac", "ogg")
    if payload.startswith(b"\x80theora"):
        return Sniffed("video/ogg", "ogv")
    return Sniffed("application/ogg", "ogx")


def _ebml(head: bytes) -> Sniffed | None:
    if not head.startswith(b"\x1a\x45\xdf\xa3"):
        return None
    doctype_at = head.find(b"\x42\x82", 4, 64)  # the DocType element
    if doctype_at != -1 and b"webm" in head[doctype_at : doctype_at + 12]:
        return Sniffed("video/webm", "webm")
    return Sniffed("video/x-matroska", "mkv")


def _bmp(head: bytes) -> Sniffed | None:
    # "BM" alone is two letters of text: also ask for a known header size.
    if head.startswith(b"BM") and len(head) >= 18:
        if struct.unpack("<I", head[14:18])[0] in {12, 40, 52, 56, 64, 108, 124}:
            return Sniffed("image/bmp", "bmp")
    return None


def _mpeg_audio(head: bytes) -> Sniffed | None:
    if head.startswith(b"ID3") and len(head) >= 10:
        # Skip the ID3v2 tag (its size is syncsafe: 7 bits a byte) and look at the first frame if it is here.
        tag_size = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | head[9] & 0x7F)
        after = _frame_sync(head[tag_size : tag_size + 4])
        return after or Sniffed("audio/mpeg", "mp3")
    return _frame_sync(head[:4])


def _frame_sync(header: bytes) -> Sniffed | None:
    if len(header) < 4 or header[0] != 0xFF:
        return None
    if header[1] & 0xF6 == 0xF0:  # 12 sync bits, layer 00: an ADTS frame (AAC)
        if (header[2] >> 2) & 0x0F < 13:  # a real sampling-frequency index
            return Sniffed("audio/aac", "aac")
        return None
    if header[1] & 0xE0 != 0xE0:
        return None
    version, layer = (header[1] >> 3) & 0x03, (header[1] >> 1) & 0x03
    bitrate, rate = header[2] >> 4, (header[2] >> 2) & 0x03
    if version == 0b01 or layer == 0 or bitrate == 0x0F or rate == 0x03:
        return None
    return Sniffed("audio/mpeg", "mp3")


def _zip(head: bytes) -> Sniffed | None:
    if not head.startswith(b"PK\x03\x04"):
        return None
    if head[30:38] == b"mimetype":  # OpenDocument stores its type, uncompressed, as the first entry
        (size,) = struct.unpack("<I", head[18:22])
        start = 38 + struct.unpack("<H", head[28:30])[0]
        declared = head[start : start + min(size, 100)].decode("ascii", "replace")
        extension = _ODF_EXTENSIONS.get(declared.removeprefix("application/vnd.oasis.opendocument."))
        if extension is not None:
            return Sniffed(declared, extension)
    return _zip_kind(_zip_names(head))


def _zip_names(head: bytes) -> list[str]:
    """Names of the local file headers found in `head`, one after the other."""
    names: list[str] = []
    offset = 0
    while head.startswith(b"PK\x03\x04", offset) and offset + 30 <= len(head) and len(names) < 64:
        flags, compressed = struct.unpack("<H", head[offset + 6 : offset + 8])[0], head[offset + 18 : offset + 22]
        name_length, extra_length = struct.unpack("<HH", head[offset + 26 : offset + 30])
        names.append(head[offset + 30 : offset + 30 + name_length].decode("utf-8", "replace"))
        if flags & 0x08:  # sizes come after the data: the next header cannot be found from here
            break
        offset += 30 + name_length + extra_length + struct.unpack("<I", compressed)[0]
    return names


def _central_directory_names(tail: bytes) -> list[str]:
    names: list[str] = []
    offset = tail.find(b"PK\x01\x02")
    while offset != -1 and offset + 46 <= len(tail) and len(names) < 4096:
        name_length, extra_length, comment_length = struct.unpack("<HHH", tail[offset + 28 : offset + 34])
        names.append(tail[offset + 46 : offset + 46 + name_length].decode("utf-8", "replace"))
        offset = tail.find(b"PK\x01\x02", offset + 46 + name_length + extra_length + comment_length)
    return names


def _zip_kind(names: list[str]) -> Sniffed:
    for prefix, sniffed in (
        ("word/", Sniffed(_DOCX, "docx")),
        ("xl/", Sniffed(_XLSX, "xlsx")),
        ("ppt/", Sniffed(_PPTX, "pptx")),
    ):
        if any(name.startswith(prefix) for name in names):
            return sniffed
    return Sniffed("application/zip", "zip")


def _text(head: bytes) -> Sniffed | None:
    if not head or b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A head cut inside a multi-byte character is still text.
        if exc.reason != "unexpected end of data" or exc.start < len(head) - 3:
            return None
        text = head[: exc.start].decode("utf-8")
    if any(ord(char) < 32 and char not in "\t\n\r\f" for char in text):
        return None
    return Sniffed("text/csv", "csv") if _looks_like_csv(text) else Sniffed("text/plain", "txt")


def _looks_like_csv(text: str) -> bool:
    lines = [line for line in text.splitlines()[:20] if line.strip()]
    if len(lines) < 2:
        return False
    complete = lines[:-1] if len(lines) > 2 else lines  # the last line may be cut
    for separator in (",", ";"):
        counts = {line.count(separator) for line in complete}
        if len(counts) == 1 and counts.pop() > 0:
            return True
    return False
