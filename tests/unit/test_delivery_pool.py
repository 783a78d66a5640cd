"""The delivery pool: bounded, and every ticket comes back exactly once, whatever its work did."""

from __future__ import annotations

import threading

import pytest

from support import wait_until
from uvrd.uploader.delivery_pool import DeliveryPool, Ticket


def collect_all(pool: DeliveryPool, n: int) -> list:
    done = []
    wait_until(lambda: done.extend(pool.collect(wait=0.05)) or len(done) >= n, 10, f"{n} tickets back")
    return done


def test_every_ticket_comes_back_once_with_its_outcome_or_its_error():
    pool = DeliveryPool(3)

    def work(ticket):
        if ticket.key % 3 == 0:
            raise RuntimeError(f"work {ticket.key} broke")
        return ticket.key * 10

    tickets = []
    for key in range(9):
        wait_until(lambda: pool.free() or tickets.extend(pool.collect(wait=0.05)), 10, "a free slot")
        pool.submit(Ticket(key), work)
    tickets.extend(collect_all(pool, 9 - len(tickets)))
    assert sorted(f.ticket.key for f in tickets) == list(range(9))
    for f in tickets:
        if f.ticket.key % 3 == 0:
            assert f.outcome is None and str(f.error) == f"work {f.ticket.key} broke"
        else:
            assert f.error is None and f.outcome == f.ticket.key * 10
    assert pool.free() == 3 and pool.in_flight() == []


def test_a_hanging_job_holds_its_slot_only():
    pool = DeliveryPool(2)
    release = threading.Event()
    hung = pool.submit(Ticket("hung"), lambda t: "released" if release.wait(30) else "timed out")
    done = []
    for key in range(5):
        pool.submit(Ticket(key), lambda t: t.key)
        done += collect_all(pool, 1)
    assert [f.outcome for f in done] == [0, 1, 2, 3, 4], "the other slot kept working"
    assert pool.in_flight() == [hung] and pool.free() == 1
    pool.submit(Ticket("last"), lambda t: "last" if release.wait(30) else "timed out")
    with pytest.raises(RuntimeError, match="full"):
        pool.submit(Ticket("one too many"), lambda t: None)
    release.set()
    assert sorted(f.outcome for f in collect_all(pool, 2)) == ["last", "released"]


def test_an_abandoned_ticket_ends_its_wait():
    pool = DeliveryPool(1)
    ticket = pool.submit(Ticket("waits"), lambda t: "abandoned" if t.abandon.wait(30) else "waited out")
    ticket.abandon.set()
    [finished] = collect_all(pool, 1)
    assert finished.outcome == "abandoned"
