"""Documents: any type up to 100 MB, named as the sender named it, typed by its bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.unit.media.conftest import MediaFactory
from zapgate.domain.media_limits import MB
from zapgate.errors import InvalidMedia
from zapgate.media.process import prepare
from zapgate.media.sniff import SNIFF_BYTES

OLE_HEADER = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504


def test_a_pdf_keeps_its_name_and_gets_its_type(media: MediaFactory) -> None:
    path = media("doc.pdf")
    prepared = prepare("document", path, filename="Invoice March.pdf", declared_mime="application/octet-stream")
    assert (prepared.path, prepared.converted) == (path, False)
    assert (prepared.mime, prepared.filename) == ("application/pdf", "Invoice March.pdf")
    assert prepared.sha256 == hashlib.sha256(path.read_bytes()).digest()
    assert prepared.size == path.stat().st_size


def test_an_office_file_is_typed_by_its_parts(media: MediaFactory) -> None:
    prepared = prepare("document", media("report.docx"), filename="report.bin")
    assert prepared.mime == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def test_a_document_without_a_name_is_named_by_its_type(media: MediaFactory) -> None:
    assert prepare("document", media("doc.pdf")).filename == "document.pdf"


@pytest.mark.parametrize(
    ("given", "kept"),
    [("../../etc/passwd", "passwd"), ("C:\\Users\\ana\\cv.pdf", "cv.pdf"), ("a\x00b\nc.pdf", "abc.pdf"), ("..", None)],
)
def test_a_name_loses_its_folders_and_control_characters(media: MediaFactory, given: str, kept: str | None) -> None:
    assert prepare("document", media("doc.pdf"), filename=given).filename == (kept or "document.pdf")


def test_the_declared_type_may_only_narrow_what_the_bytes_prove(tmp_path: Path) -> None:
    text = tmp_path / "list"
    text.write_bytes(b"just some words\n")
    assert prepare("document", text, declared_mime="text/csv").mime == "text/csv"  # a kind of text: taken
    assert prepare("document", text, declared_mime="application/pdf").mime == "text/plain"  # not text: ignored
    assert prepare("document", text, declared_mime="text/html").mime == "text/plain"  # not offered: ignored


def test_an_old_office_file_is_named_by_its_extension_within_its_family(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.write_bytes(OLE_HEADER)
    assert prepare("document", old, filename="budget.xls").mime == "application/vnd.ms-excel"
    assert prepare("document", old, filename="budget.pdf").mime == "application/x-ole-storage"


def test_an_unknown_binary_is_an_octet_stream(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"\x00\x01\x02\x03" * SNIFF_BYTES)
    prepared = prepare("document", blob, declared_mime="application/pdf", filename="x.pdf")
    assert (prepared.mime, prepared.filename) == ("application/octet-stream", "x.pdf")


def test_a_document_over_100_mb_is_refused(tmp_path: Path) -> None:
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as file:
        file.truncate(101 * MB)  # sparse: nothing is written
    with pytest.raises(InvalidMedia) as caught:
        prepare("document", huge, field="file")
    assert caught.value.message == "file: 101 MB is over WhatsApp's 100 MB limit for documents"
    assert (caught.value.field, caught.value.code) == ("file", "media_too_large")
