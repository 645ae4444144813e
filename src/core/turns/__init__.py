"""Durable turns: a turn runs in its own task; its events go to a turn log (port + memory,
SQLite and DynamoDB adapters) for resume, Stop and lost producers."""
