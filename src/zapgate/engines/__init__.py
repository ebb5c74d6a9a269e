"""Engines: what connects a session to a WhatsApp network. `whatsmeow` (real, via neonize) and `sandbox`."""
