"""Conversations: the SessionStore port, its rules, and memory, SQLite and DynamoDB adapters."""
