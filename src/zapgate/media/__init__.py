"""Media files: what WhatsApp accepts made from what clients send (sniff.py, process.py), and their bytes
(the `MediaStore` seam in store.py, the PostgreSQL and S3 stores, the factory)."""
