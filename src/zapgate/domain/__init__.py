"""Pure domain: identifiers, records and rules. No I/O, no await, no vendor types."""
