"""The shared core: typed events, the chat turn / agent loop, ports, settings and adapters.

Domain modules (events, messages, errors, ports, chat, tools) import no FastAPI, boto3,
httpx or os.environ; only the adapter modules touch I/O.
"""
