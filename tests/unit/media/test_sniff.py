"""Sniffing: the type of a file comes from its bytes, whatever the client calls it."""

from __future__ import annotations

import io
import os
import random
import zipfile
from pathlib import Path

import pytest

from tests.support import media_files as mf
from tests.unit.media.conftest import MediaFactory
from zapgate.media.process import prepare
from zapgate.media.sniff import SNIFF_BYTES, sniff, sniff_file

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"


@pytest.mark.parametrize(
    ("sample", "mime", "extension", "animated"),
    [
        ("photo.jpg", "image/jpeg", "jpg", False),
        ("photo.png", "image/png", "png", False),
        ("still.gif", "image/gif", "gif", False),
        ("photo.webp", "image/webp", "webp", False),
        ("moving.webp", "image/webp", "webp", True),
        ("clip.mp4", "video/mp4", "mp4", False),
        ("clip.mov", "video/quicktime", "mov", False),
        ("clip.3gp", "video/3gpp", "3gp", False),
        ("clip.webm", "video/webm", "webm", False),
        ("clip.mkv", "video/x-matroska", "mkv", False),
        ("clip.avi", "video/x-msvideo", "avi", False),
        ("tone.opus.ogg", "audio/ogg; codecs=opus", "ogg", False),
        ("tone.vorbis.ogg", "audio/ogg; codecs=vorbis", "ogg", False),
        ("tone.mp3", "audio/mpeg", "mp3", False),  # behind an ID3 tag
        ("tone-raw.mp3", "audio/mpeg", "mp3", False),  # frame sync only
        ("tone.aac", "audio/aac", "aac", False),
        ("tone.m4a", "audio/mp4", "m4a", False),
        ("tone.wav", "audio/wav", "wav", False),
        ("tone.amr", "audio/amr", "amr", False),
        ("doc.pdf", "application/pdf", "pdf", False),
        ("report.docx", DOCX, "docx", False),
        ("notes.txt", "text/plain", "txt", False),
    ],
)
def test_each_type_is_told_from_its_first_bytes(
    media: MediaFactory, sample: str, mime: str, extension: str, animated: bool
) -> None:
    head = media(sample).read_bytes()[:SNIFF_BYTES]
    found = sniff(head)
    assert found is not None
    assert (found.mime, found.extension, found.animated) == (mime, extension, animated)


def test_the_raw_mp3_sample_really_has_no_id3_tag(media: MediaFactory) -> None:
    assert not media("tone-raw.mp3").read_bytes().startswith(b"ID3")  # so the frame-sync path is the one tested


@pytest.mark.parametrize(
    ("parts", "mime"),
    [
        ({"[Content_Types].xml": mf.CONTENT_TYPES, "xl/workbook.xml": b"<x/>"}, XLSX),
        ({"[Content_Types].xml": mf.CONTENT_TYPES, "ppt/presentation.xml": b"<p/>"}, PPTX),
        ({"readme.txt": b"hello", "data/a.bin": b"\x00\x01"}, "application/zip"),
    ],
)
def test_office_files_are_told_apart_by_their_parts(parts: dict[str, bytes], mime: str) -> None:
    found = sniff(mf.office_zip(parts))
    assert found is not None and found.mime == mime


def test_opendocument_is_told_by_its_stored_mimetype() -> None:
    found = sniff(mf.odt_bytes())
    assert found is not None and (found.mime, found.extension) == ("application/vnd.oasis.opendocument.text", "odt")


def test_a_docx_whose_parts_are_past_the_head_is_found_in_the_central_directory(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", mf.CONTENT_TYPES)
        archive.writestr("docProps/thumbnail.jpeg", os.urandom(3 * SNIFF_BYTES))  # stored: pushes word/ far
        archive.writestr("word/document.xml", b"<w/>")
    path = tmp_path / "big.docx"
    path.write_bytes(buffer.getvalue())
    head = sniff(buffer.getvalue()[:SNIFF_BYTES])
    assert head is not None and head.mime == "application/zip"  # the head alone cannot tell
    assert sniff_file(path).mime == DOCX


def test_text_with_a_character_cut_at_the_end_of_the_head_is_still_text() -> None:
    head = ("é" * SNIFF_BYTES).encode()[: SNIFF_BYTES - 1]  # ends inside a two-byte character
    found = sniff(head)
    assert found is not None and found.mime == "text/plain"


def test_comma_separated_lines_are_csv() -> None:
    found = sniff(b"name,phone,city\nAna,5511999,Recife\nBia,5521988,Rio\n")
    assert found is not None and (found.mime, found.extension) == ("text/csv", "csv")


# the random bytes are seeded: every pytest-xdist worker must collect the same parameters (their ids are the bytes)
NOISE = random.Random(64).randbytes(64) + b"\x00"


@pytest.mark.parametrize("head", [b"\x00\x01\x02binary\x00", NOISE, b"", b"\xfe\xff\xfa broken"])
def test_unrecognised_bytes_are_nothing_known(head: bytes) -> None:
    assert sniff(head) is None


def test_an_unknown_file_is_application_octet_stream(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"\x00\x9f\x12" * 100)
    assert sniff_file(path).mime == "application/octet-stream"


def test_the_declared_type_and_name_do_not_override_the_bytes(media: MediaFactory) -> None:
    """A PNG called 'invoice.pdf' and declared as a PDF is sent as the PNG it is."""
    png = media("photo.png")
    path = png.rename(png.with_name("invoice.pdf"))
    prepared = prepare("document", path, declared_mime="application/pdf", filename="invoice.pdf")
    assert prepared.mime == "image/png"
    assert prepared.filename == "invoice.pdf"
    image = prepare("image", path, declared_mime="image/gif")
    assert image.mime == "image/png"
