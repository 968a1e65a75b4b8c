"""Every RPC the 0.9.16 client can send is answered: implemented, or refused with CARLA's error shape."""
from __future__ import annotations

import re
import socket
from pathlib import Path

import msgpack

from rllib_integration.embedded import service

CATALOGUE = Path(__file__).resolve().parents[1] / "docs" / "wire-protocol.md"


def catalogued_rpcs() -> dict[str, str]:
    """Method name -> return type, from the tables of docs/wire-protocol.md §2."""
    text = CATALOGUE.read_text()
    section = text[text.index("## 2. Every RPC"):text.index("### 2.10")]
    return {name: returns.strip() for name, returns in re.findall(r"^\| `(\w+)` \|[^|]*\|([^|]*)\|", section, re.M)}


def test_catalogue_and_server_cover_the_same_rpcs():
    catalogue = catalogued_rpcs()
    handled = set(service._RPC_METHODS) | set(service.UNSUPPORTED_RPCS)
    assert len(catalogue) == 128
    assert set(catalogue) == handled


def test_refused_rpcs_use_the_response_shape_of_their_return_type():
    catalogue = catalogued_rpcs()
    for name, void in service.UNSUPPORTED_RPCS.items():
        assert ("void" in catalogue[name]) == void, name


class RawRpc:
    """A bare msgpack-rpc client, to send what the carla client never would."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.msgid = 0

    def call(self, method: str, *args: object) -> tuple[object, object]:
        self.msgid += 1
        self.sock.sendall(msgpack.packb([0, self.msgid, method, [[False], *args]], use_bin_type=True))
        while True:
            for message in self.unpacker:
                assert message[0] == 1 and message[1] == self.msgid
                return message[2], message[3]
            self.unpacker.feed(self.sock.recv(65536))

    def close(self) -> None:
        self.sock.close()


def test_every_refused_rpc_is_answered_with_a_message_naming_the_real_backend(server):
    client = RawRpc(server.port)
    try:
        for name, void in service.UNSUPPORTED_RPCS.items():
            error, result = client.call(name, 1)
            assert error is None, name
            if void:
                assert result[0][0] is True, name
                message = result[0][1][0]
            else:
                assert result[0][0] == 0, name
                message = result[0][1][0]
            assert "not supported by the embedded CARLA server" in message and "backend 'carla'" in message
        assert client.call("version") == (None, [[1, "0.9.16"]])
    finally:
        client.close()
