"""Tests for successor_heads.core.hub: the hub reachability check that lets offline machines fail fast."""

import socket

from huggingface_hub import constants

from successor_heads.core import hub


def test_hub_reachable_is_quick_when_offline(monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE when it is imported; its flag is what a process started
    # with HF_HUB_OFFLINE=1 has
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    real_connect = socket.create_connection

    def no_connect(*a, **k):
        raise AssertionError("HF_HUB_OFFLINE=1 must decide without touching the network")

    monkeypatch.setattr(socket, "create_connection", no_connect)
    assert hub.hub_reachable() is False
    monkeypatch.setattr(socket, "create_connection", real_connect)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as s:  # a port with nobody listening: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert hub.hub_reachable(timeout=1.0) is False  # refused: no waiting for the timeout either
