"""The keeper (server/ws/keeper.py) alone, on MockClock: sessions are plain objects
that record what the keeper asks of them."""

import math

import trio

from sensorstream.server.ws import Keeper


class Session:
    def __init__(self, answers=True):
        self.ended = False
        self.ping_due = 0.0
        self.pong = None
        self.pong_deadline = math.inf
        self.answers = answers
        self.pings: list[float] = []
        self.beats: list[float] = []
        self.timed_out: float | None = None
        self.last = trio.current_time()

    def ping(self, payload, frame):
        assert frame[0] == 0x89 and frame[2:] == payload
        self.pings.append(trio.current_time())
        if self.answers:
            self.pong.set()

    def heartbeat(self, frame):
        assert frame[0] == 0x81 and b'"heartbeat"' in frame
        self.beats.append(trio.current_time())
        self.last = trio.current_time()

    def last_write_at(self):
        return self.last

    def ping_timed_out(self, timeout):
        self.timed_out = trio.current_time()
        self.ended = True


async def test_pings_every_interval_and_heartbeats_after_silence(nursery, autojump_clock):
    k = Keeper(ping_interval=5, ping_timeout=3, heartbeat_s=2)
    nursery.start_soon(k.run)
    s = Session()
    k.add(s)
    await trio.sleep(10.5)
    assert s.pings == [5, 10] and s.beats == [2, 4, 6, 8, 10]
    assert s.timed_out is None


async def test_a_write_postpones_the_heartbeat(nursery, autojump_clock):
    k = Keeper(ping_interval=1000, ping_timeout=3, heartbeat_s=2)
    nursery.start_soon(k.run)
    s = Session()
    k.add(s)
    await trio.sleep(1.5)
    s.last = trio.current_time()  # the session wrote something
    await trio.sleep(3)
    assert s.beats == [3.5]


async def test_unanswered_ping_times_out_at_interval_plus_timeout(nursery, autojump_clock):
    k = Keeper(ping_interval=5, ping_timeout=3, heartbeat_s=1000)
    nursery.start_soon(k.run)
    s = Session(answers=False)
    k.add(s)
    await trio.sleep(20)
    assert s.pings == [5] and s.timed_out == 8


async def test_sessions_due_together_share_one_round(nursery, autojump_clock):
    k = Keeper(ping_interval=5, ping_timeout=3, heartbeat_s=1000)
    nursery.start_soon(k.run)
    ss = [Session() for _ in range(300)]  # more than one ROUND: the keeper yields in between
    for s in ss:
        k.add(s)
    await trio.sleep(5.5)
    assert k._round == 1 and all(s.pings == [5] for s in ss)


async def test_ended_sessions_leave_the_heap_bounded(nursery, autojump_clock):
    k = Keeper(ping_interval=5, ping_timeout=3, heartbeat_s=1000)
    live = Session()
    k.add(live)
    for _ in range(1000):
        s = Session()
        k.add(s)
        s.ended = True
        k.discard(s)
    assert len(k._heap) <= 2 * k.COMPACT_ABOVE + 2
    nursery.start_soon(k.run)
    await trio.sleep(5.5)
    assert live.pings == [5]
