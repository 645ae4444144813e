"""The ChatModel port in provider-neutral types, and its adapters: OpenAI, the simulated model."""
