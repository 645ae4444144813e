"""Agent roles: named system prompts from roles.toml, chosen per request."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib.resources import files

from core.errors import UnknownRole

DEFAULT_ROLE = "default"


@cache
def load_roles() -> dict[str, str]:
    """Role name -> system prompt, from the packaged roles.toml."""
    text = files("core.chat").joinpath("roles.toml").read_text(encoding="utf-8")
    return {name: str(role["system_prompt"]) for name, role in tomllib.loads(text).items()}


def system_prompt_for(role: str | None, default_prompt: str) -> str:
    """The system prompt of `role`; None or "default" gives the SYSTEM_PROMPT setting."""
    if role is None or role == DEFAULT_ROLE:
        return default_prompt
    roles = load_roles()
    if role not in roles:
        known = ", ".join([DEFAULT_ROLE, *sorted(roles)])
        raise UnknownRole(f"unknown role {role!r}; known roles: {known}")
    return roles[role]
