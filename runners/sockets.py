"""Which TCP ports a process tree listens on, and on which address: read from /proc, as `ss -ltnp` does.

The check behind "nothing cattag starts listens beyond this machine": a job server, a Flink cluster, Prism or
an SDK worker pool bound to 0.0.0.0 or [::] accepts connections from the network, and whoever reaches a job
port can submit a job, which runs their code as this user. Linux only (other systems: an empty answer).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import pathlib

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp*


@dataclasses.dataclass(frozen=True, order=True)
class Listener:
    pid: int
    command: str
    address: str  # as bound: 127.0.0.1, ::1, 0.0.0.0, ::
    port: int

    @property
    def loopback_only(self) -> bool:
        address = ipaddress.ip_address(self.address)
        mapped = getattr(address, "ipv4_mapped", None)
        return (mapped or address).is_loopback

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.command} (pid {self.pid}) on {host}:{self.port}"


def _address(hex_address: str) -> str:
    """/proc/net/tcp's address column: IPv4 as one little-endian word, IPv6 as four."""
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def _listening_inodes(pid: int) -> dict[str, tuple[str, int]]:
    """inode -> (address, port) of the LISTEN sockets in `pid`'s network namespace."""
    found = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = pathlib.Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != _LISTEN:
                continue
            address, port = fields[1].rsplit(":", 1)
            found[fields[9]] = (_address(address), int(port, 16))
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def command_of(pid: int) -> str:
    """The program, and for a JVM or an interpreter its main class, jar or module: what a reader recognises."""
    try:
        argv = [arg.decode(errors="replace") for arg in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return "?"
    name = pathlib.Path(argv[0]).name if argv and argv[0] else "?"
    if name.startswith("python") and len(argv) > 1 and argv[1] and not argv[1].startswith("-"):
        return f"{name} {pathlib.Path(argv[1]).name}"  # a script (console scripts run this way)
    for before, arg in zip(argv[1:], argv[2:]):
        if before == "-jar" or (before == "-m" and name.startswith("python")):
            return f"{name} {pathlib.Path(arg).name}"
        if arg.startswith(("org.apache.", "com.")) and not before.startswith("-"):
            return f"{name} {arg.rsplit('.', 1)[-1]}"
    return name


def descendants(root: int) -> set[int]:
    """`root` and every process below it (by parent pid; processes in new sessions included)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = pathlib.Path(entry.path, "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def listeners(pids) -> list[Listener]:
    """Every TCP socket in LISTEN state held by one of `pids`."""
    found = set()
    for pid in pids:
        inodes = _socket_inodes(pid)
        if not inodes:
            continue
        for inode, (address, port) in _listening_inodes(pid).items():
            if inode in inodes:
                found.add(Listener(pid, command_of(pid), address, port))
    return sorted(found)


def exposed(pids) -> list[Listener]:
    """The listeners of `pids` that another machine could reach (bound beyond loopback)."""
    return [listener for listener in listeners(pids) if not listener.loopback_only]
