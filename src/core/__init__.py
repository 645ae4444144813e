"""The shared core: typed events, the chat turn and agent loop, ports and their adapters.

Feature folders (chat, turns, model, tools, sessions, quota, aws), each port beside its
adapters. Domain modules import no FastAPI, botocore, httpx or os.environ (`settings` alone
reads the environment); only the adapter modules touch I/O.
"""
