"""Beam's Python gRPC servers on loopback: the SDK worker pool, the DirectRunner's worker channels, Prism's
and Flink's LOOPBACK workers.

Beam Python opens its servers on every interface: the LOOPBACK worker pool (worker_pool_main, '[::]:0'), the
FnApiRunner's control, data, state and logging servers when the DirectRunner runs worker processes
(worker_handlers, '[::]:0'), the embedded job service's logging server. Only this machine's processes ever
call them (the runner or the SDK workers it started), and a reachable worker pool starts SDK workers for
whoever asks. `bind_to_loopback()` makes every gRPC server of this process that asks for a wildcard address
bind `localhost` instead (127.0.0.1 and ::1, on the one port), and leaves named addresses alone. It wraps
grpc's one bind method, since Beam builds these addresses inside functions cattag does not call; every
pipeline cattag builds calls it first (runners/pipeline.make_pipeline, runners/prism.served).
"""

from __future__ import annotations

_WILDCARDS = {"[::]", "0.0.0.0", "", "[::0]", "[0:0:0:0:0:0:0:0]"}


def loopback_address(address: str) -> str:
    """'[::]:0' -> 'localhost:0'; any address that names a host stays as it is."""
    host, _, port = address.rpartition(":")
    return f"localhost:{port}" if host in _WILDCARDS and port.isdigit() else address


def bind_to_loopback() -> None:
    """Rewrite wildcard binds of this process's gRPC servers to localhost (idempotent)."""
    from grpc import _server

    original = _server._Server.add_insecure_port
    if getattr(original, "binds_loopback", False):
        return

    def add_insecure_port(self, address):
        return original(self, loopback_address(address))

    add_insecure_port.binds_loopback = True
    add_insecure_port.__doc__ = original.__doc__
    _server._Server.add_insecure_port = add_insecure_port
