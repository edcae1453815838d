"""Is the Hugging Face hub reachable? Asked before any hub download (models and corpora), so an
offline machine fails within seconds instead of waiting on retries."""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

#: Seconds allowed for the hub reachability check (DNS + TCP connect).
HUB_TIMEOUT_S = 3.0


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """True if a TCP connection to the hub endpoint opens within ``timeout`` seconds.

    False in huggingface_hub's offline mode (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``, which
    that library reads when it is imported; its flag is read here at each call). Honours
    ``HF_ENDPOINT``. DNS lookup is bounded too (run in a daemon thread), so an offline machine
    answers within about ``timeout`` seconds.
    """
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            ok.append(False)

    th = threading.Thread(target=probe, daemon=True)
    th.start()
    th.join(timeout + 0.5)
    return bool(ok and ok[0])
