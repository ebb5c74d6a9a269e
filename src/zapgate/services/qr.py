"""QR codes as pictures: PNG data URLs for JSON and events, PNG and SVG for browsers."""

from __future__ import annotations

import io

import segno


def qr_data_url(code: str) -> str:
    """Return `code` as a PNG data URL (what a browser shows as the QR image)."""
    return str(segno.make(code, error="l").png_data_uri(scale=6, border=2))


def qr_png(code: str) -> bytes:
    """Return `code` as a PNG image."""
    buffer = io.BytesIO()
    segno.make(code, error="l").save(buffer, kind="png", scale=6, border=2)
    return buffer.getvalue()


def qr_svg(code: str) -> bytes:
    """Return `code` as an SVG image."""
    buffer = io.BytesIO()
    segno.make(code, error="l").save(buffer, kind="svg", scale=6, border=2, xmldecl=False)
    return buffer.getvalue()
