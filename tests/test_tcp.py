"""server/tcp.py: the front door's own accept loop and TCP stream, over real sockets."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import textwrap

import pytest
import trio

from sensorstream.server.tcp import YIELD_EVERY, TcpStream, detach_listeners, serve_tcp


def _pair() -> tuple[TcpStream, socket.socket]:
    """A connected TCP pair on 127.0.0.1 (not a socketpair: TCP options must apply)."""
    lsock = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(lsock.getsockname())
    sock, address = lsock.accept()
    lsock.close()
    return TcpStream(sock, address), peer


async def test_round_trip_and_end_of_stream():
    s, peer = _pair()
    assert s.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert s.address == peer.getsockname()
    peer.sendall(b"hello")
    assert await s.receive_some(100) == b"hello"
    await s.send_all(b"back")
    assert peer.recv(100) == b"back"
    peer.close()
    assert await s.receive_some() == b""
    await s.aclose()


async def test_a_big_write_waits_for_the_reader_and_completes():
    s, peer = _pair()
    peer.setblocking(False)
    data = bytes(range(256)) * 40_000  # 10 MB: far more than the kernel buffers
    received = bytearray()

    async def read_all():
        while len(received) < len(data):
            try:
                received.extend(peer.recv(1 << 20))
            except BlockingIOError:
                await trio.lowlevel.wait_readable(peer)

    async with trio.open_nursery() as n:
        n.start_soon(read_all)
        await s.send_all(data)
    assert bytes(received) == data
    peer.close()
    await s.aclose()


async def test_closed_stream_raises_closed_resource_error_and_wakes_a_waiting_reader():
    s, peer = _pair()
    errors = []

    async def reader():
        try:
            await s.receive_some()
        except trio.ClosedResourceError as e:
            errors.append(e)

    async with trio.open_nursery() as n:
        n.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await s.aclose()
    assert len(errors) == 1
    with pytest.raises(trio.ClosedResourceError):
        await s.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await s.send_all(b"x")
    await s.aclose()  # twice is fine
    peer.close()


async def test_a_reset_connection_is_broken():
    s, peer = _pair()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # RST
    with pytest.raises(trio.BrokenResourceError):
        await s.receive_some()
    await s.aclose()


async def test_two_readers_at_once_is_an_error():
    s, peer = _pair()
    async with trio.open_nursery() as n:
        n.start_soon(s.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await s.receive_some()
        peer.sendall(b"x")
    peer.close()
    await s.aclose()


async def test_a_reader_that_always_finds_data_still_lets_others_run():
    s, peer = _pair()
    peer.sendall(b"x" * 1000)
    while len(_peek(s)) < 1000:  # all of it in the receive buffer
        await trio.lowlevel.wait_readable(s.socket)
    other_ran = 0

    async def other():
        nonlocal other_ran
        while True:
            other_ran += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as n:
        n.start_soon(other)
        await trio.lowlevel.checkpoint()
        before = other_ran
        reads = 10 * YIELD_EVERY
        for _ in range(reads):
            assert await s.receive_some(1) == b"x"
        assert other_ran - before >= reads // YIELD_EVERY - 1
        n.cancel_scope.cancel()
    peer.close()
    await s.aclose()


def _peek(s: TcpStream) -> bytes:
    try:
        return s.socket.recv(1 << 16, socket.MSG_PEEK)
    except BlockingIOError:
        return b""


async def test_every_call_is_a_cancellation_point_even_with_data_waiting():
    s, peer = _pair()
    peer.sendall(b"data")
    await trio.lowlevel.wait_readable(s.socket)
    with trio.CancelScope() as scope:
        scope.cancel()
        await s.receive_some()
    assert scope.cancelled_caught
    assert await s.receive_some() == b"data"  # nothing was consumed by the cancelled call
    peer.close()
    await s.aclose()


async def test_serve_tcp_accepts_with_the_peer_address_and_closes_its_sockets_when_cancelled():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    socks = detach_listeners(listeners)
    seen = []

    async def handler(stream: TcpStream):
        seen.append(stream.address)
        await stream.send_all(b"hi " + str(stream.address[1]).encode())
        await stream.aclose()

    async with trio.open_nursery() as n:
        n.start_soon(serve_tcp, handler, socks, n)
        for _ in range(3 * YIELD_EVERY):  # more than one run of accepts
            c = await trio.open_tcp_stream("127.0.0.1", port)
            assert await c.receive_some() == b"hi " + str(c.socket.getsockname()[1]).encode()
            await c.aclose()
        n.cancel_scope.cancel()
    assert len(seen) == 3 * YIELD_EVERY
    assert all(s.fileno() == -1 for s in socks)
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


def test_out_of_file_descriptors_is_logged_and_accepting_goes_on_once_some_are_free():
    """EMFILE from accept(): a line in the log, a short pause, and the connections
    that waited in the listen queue are served once descriptors are free. The
    server is a child process whose descriptor limit is lowered on purpose."""
    script = textwrap.dedent("""
        import logging, os, resource, sys, trio
        from sensorstream.server.tcp import detach_listeners, serve_tcp
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")

        async def main():
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            socks = detach_listeners(listeners)
            served, held = [], []
            all_served = trio.Event()
            freeing = False

            async def handler(stream):
                served.append(stream.address)
                print("SERVED", len(served), flush=True)
                if freeing:
                    # Accepted before the test said "free" but run after it: accept()
                    # takes several connections before their handlers get to run.
                    await stream.aclose()
                else:
                    held.append(stream)  # kept open: each one uses up a descriptor
                if len(served) == 8:
                    all_served.set()

            def out_of_capacity(name):
                if name == "EMFILE" and not capacity:
                    print("COUNTED EMFILE", flush=True)
                capacity.append(name)

            capacity = []
            async with trio.open_nursery() as n:
                n.start_soon(serve_tcp, handler, socks, n, out_of_capacity)
                used = len(os.listdir("/proc/self/fd"))
                resource.setrlimit(resource.RLIMIT_NOFILE, (used + 4, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
                print("PORT", socks[0].getsockname()[1], flush=True)
                await trio.lowlevel.wait_readable(0)  # the test says: free them
                os.read(0, 100)
                freeing = True
                for s in held:
                    await s.aclose()
                await all_served.wait()
                print("DONE", flush=True)
                n.cancel_scope.cancel()

        trio.run(main)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    clients = []
    try:
        port = int(child.stdout.readline().split()[1])
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]  # queued in the backlog
        lines = []
        while not any(line.startswith("accept: EMFILE") for line in lines) or "COUNTED EMFILE\n" not in lines:
            line = child.stdout.readline()
            assert line, "child ended: " + "".join(lines)
            lines.append(line)
        served_before = sum(1 for line in lines if line.startswith("SERVED"))
        assert served_before < 8
        assert "trying again" in lines[-1]
        child.stdin.write("free\n")
        child.stdin.flush()
        rest = child.communicate(timeout=30)[0]
        assert "DONE" in rest and child.returncode == 0
    finally:
        for c in clients:
            c.close()
        if child.poll() is None:
            child.kill()


async def test_receive_nowait_returns_what_is_there_or_none():
    s, peer = _pair()
    assert s.receive_nowait() is None
    peer.sendall(b"abc")
    await trio.lowlevel.wait_readable(s.socket)
    assert s.receive_nowait(2) == b"ab"
    assert s.receive_nowait() == b"c"
    assert s.receive_nowait() is None
    peer.close()
    await trio.lowlevel.wait_readable(s.socket)  # the FIN
    assert s.receive_nowait() == b""
    await s.aclose()
    with pytest.raises(trio.ClosedResourceError):
        s.receive_nowait()


async def test_after_a_short_read_the_next_read_waits_first_and_still_gets_everything():
    # A read that took less than it asked for leaves the socket (most likely)
    # empty, so the next one waits for readability before reading: data already
    # there by then, data that comes later, and the end of the stream must all
    # still arrive, and the wait must stay a cancellation point.
    s, peer = _pair()
    peer.sendall(b"one")
    assert await s.receive_some(100) == b"one"  # short: the next read waits first
    peer.sendall(b"two")  # already waiting when the next read starts
    assert await s.receive_some(100) == b"two"
    with trio.move_on_after(0.05) as scope:  # nothing comes: the wait is cancellable
        await s.receive_some(100)
    assert scope.cancelled_caught

    async def later():
        await trio.testing.wait_all_tasks_blocked()
        peer.sendall(b"three")

    async with trio.open_nursery() as n:
        n.start_soon(later)
        assert await s.receive_some(100) == b"three"
    assert s.receive_nowait() is None  # empty: a read after this one waits first too
    peer.close()
    assert await s.receive_some(100) == b""
    await s.aclose()
