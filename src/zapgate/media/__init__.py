"""Media files: what WhatsApp accepts, made from what clients send (sniffing, conversion, thumbnails)."""
