"""The data layer: the shared pool, the ConnectionManager, tables, repositories and migrations."""
