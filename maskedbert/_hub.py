"""Is the Hugging Face hub reachable? One quick check, so that commands without network fail in well
under a second with a useful message instead of after `datasets`' ~30 s of connection retries.

Kept free of torch, transformers and huggingface_hub imports: the CLI validates arguments with it.
"""
from __future__ import annotations

import functools
import os
import socket
import urllib.parse

DEFAULT_ENDPOINT = "https://huggingface.co"
_CONNECT_TIMEOUT_S = 3.0
_TRUE = ("1", "on", "yes", "true")
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    """The user asked for cached files only (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE or HF_DATASETS_OFFLINE)."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in names)


@functools.lru_cache(maxsize=None)
def _unreachable_reason(endpoint: str) -> str | None:
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None  # a proxy decides what is reachable; connecting directly would prove nothing
    parsed = urllib.parse.urlsplit(endpoint)
    host = parsed.hostname or ""
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:  # DNS failure, refused, timed out, no route
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"


def hub_unreachable_reason() -> str | None:
    """None when the hub answers a TCP connection (or a proxy is configured); else why not, in words.

    One connection attempt with a short timeout, cached for the process. Callers check offline_mode()
    first: in offline mode the hub libraries read their caches and never connect.
    """
    return _unreachable_reason(hub_endpoint())


def cached_model_config(name: str) -> str | None:
    """Path of `name`'s config.json in the local hub cache, or None (also when huggingface_hub is missing)."""
    try:
        from huggingface_hub import try_to_load_from_cache  # optional dependency (keeps --help light)
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # an invalid repo id is simply not cached
        return None
    return found if isinstance(found, str) else None
