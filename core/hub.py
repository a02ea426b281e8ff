"""Whether the Hugging Face hub can be reached, and loading from the local cache when it cannot.

Without network, `datasets` and `transformers` retry their requests (about 40 s and a
dozen warnings) before they fail. One quick connection attempt answers the question
first; when it fails, the libraries are put in offline mode, so anything already in the
local cache still loads at once and anything else fails at once with one line.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0


def hub_host() -> str:
    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """False when offline mode is set or a TCP connection to the hub fails; True behind a proxy (not probed)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # only the proxy knows; let the libraries try
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def offline(on: bool = True) -> Iterator[None]:
    """Hub libraries in offline mode (cache only) for the duration of the block."""
    if not on:
        yield
        return
    import huggingface_hub.constants as hub_constants

    targets = [(hub_constants, "HF_HUB_OFFLINE")]
    try:
        import datasets.config as ds_config

        targets += [(ds_config, "HF_HUB_OFFLINE"), (ds_config, "HF_DATASETS_OFFLINE")]
    except ImportError:
        pass
    saved = [(obj, name, getattr(obj, name)) for obj, name in targets]
    env = os.environ.get("HF_HUB_OFFLINE")
    try:
        for obj, name in targets:
            setattr(obj, name, True)
        os.environ["HF_HUB_OFFLINE"] = "1"  # transformers asks the environment
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)
        if env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = env
