"""Media files' bytes: the `MediaStore` seam (store.py), PostgreSQL and S3 stores, and the factory."""
