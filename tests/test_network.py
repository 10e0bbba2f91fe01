"""The whole pipeline runs with networking blocked: nothing is fetched at run time."""

from __future__ import annotations

import socket

import numpy as np
import pytest

import faceunlock as fu
from faceunlock import demo


class _NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise _NetworkUsed(f"network access attempted: {args!r}")

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            refuse(*args)

    monkeypatch.setattr(socket, "socket", NoSocket)
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex",
                 "create_server", "socketpair", "fromfd"):
        monkeypatch.setattr(socket, name, refuse)
    yield calls
    assert not calls, f"network used: {calls}"


def test_blocker_works(no_network):
    with pytest.raises(_NetworkUsed):
        socket.create_connection(("127.0.0.1", 9))
    with pytest.raises(_NetworkUsed):
        socket.socket()
    no_network.clear()


def test_pipeline_offline(no_network, tmp_path):
    # a fresh engine so that every model is loaded while the network is blocked
    engine = fu.FaceEngine(threads=1)
    a = fu.load_image(demo.DATA / "astronaut.jpg")
    g = fu.load_image(demo.DATA / "grace_hopper.jpg")
    faces = engine.detect(a)
    assert len(faces) == 1
    ta, tg = engine.template(a), engine.template(g)
    assert fu.similarity(ta, engine.template(demo.new_view(a, 10, 0.9, 0.8))) >= fu.DEFAULT_THRESHOLD
    assert fu.similarity(ta, tg) < fu.DEFAULT_THRESHOLD
    assert len(engine.templates(np.hstack([a, a]))) == 2
    assert demo.run(engine, say=lambda s: None) == 0
    assert demo.run(say=lambda s: None) == 0  # its own engine, loaded offline too
