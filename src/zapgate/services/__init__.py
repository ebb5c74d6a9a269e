"""Services: the only layer that combines the database, the engines and the bus; they own the transactions."""
