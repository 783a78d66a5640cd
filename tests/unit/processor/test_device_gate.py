"""Two jobs in the engine child at once (device_gate.py): the next job's steps before its forward run
while the job before is in its forward, that job's steps after it run while the next forward runs,
and neither two forwards nor two jobs' other steps ever overlap."""

from __future__ import annotations

import contextlib
import threading

from uvrd.processor import device_gate

WAIT_S = 10.0  # a bound so that a wrong gate ends the test (it would deadlock), not a timing


def test_the_next_job_prepares_beside_a_forward_and_the_job_before_finishes_beside_the_next_forward():
    gate = device_gate.Gate()
    a_in_forward, b_prepared, b_in_forward, a_finished = (threading.Event() for _ in range(4))
    seen: list[str] = []
    inside = {"cpu": 0, "device": 0}
    overlaps: list[str] = []
    lock = threading.Lock()

    @contextlib.contextmanager
    def within(kind: str):
        """A stretch of a job on the CPU or on the device: two at once of a kind is an overlap."""
        with lock:
            inside[kind] += 1
            if inside[kind] > 1:
                overlaps.append(kind)
        try:
            yield
        finally:
            with lock:
                inside[kind] -= 1

    def job_a() -> None:
        with gate.turn():
            with within("cpu"):
                seen.append("a before")
            with gate.device(), within("device"):
                a_in_forward.set()
                seen.append(f"b prepared during a's forward: {b_prepared.wait(WAIT_S)}")
            with within("cpu"):
                seen.append(f"a finishes during b's forward: {b_in_forward.wait(WAIT_S)}")
                a_finished.set()

    def job_b() -> None:
        assert a_in_forward.wait(WAIT_S)
        with gate.turn():
            with within("cpu"):
                b_prepared.set()
            with gate.device(), within("device"):
                b_in_forward.set()
                seen.append(f"a finished during b's forward: {a_finished.wait(WAIT_S)}")

    threads = [threading.Thread(target=job_a), threading.Thread(target=job_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(3 * WAIT_S)
    assert seen == ["a before", "b prepared during a's forward: True", "a finishes during b's forward: True",
                    "a finished during b's forward: True"]
    assert overlaps == [], "two forwards, or two jobs' other steps, at once"


def test_a_job_outside_any_forward_holds_its_turn_from_start_to_end():
    """An architecture without a gated forward: the next job waits for the whole job before it."""
    gate = device_gate.Gate()
    started, order = threading.Event(), []

    def whole(name: str) -> None:
        with gate.turn():
            order.append(f"{name} starts")
            started.set()
            order.append(f"{name} ends")

    first = threading.Thread(target=whole, args=("first",))
    with gate.turn():  # the first job's turn is taken before the second can begin
        first.start()
        assert not started.wait(0.2), "a job began inside another job's turn"
    first.join(WAIT_S)
    assert order == ["first starts", "first ends"]


class _Model:
    """An architecture's shape: a forward, and a pass without the model behind a flag (MDX's)."""

    gate: device_gate.Gate

    def demix(self, mix, is_match_mix=False):
        return self.gate._device.locked(), is_match_mix  # whether this call holds the device


def test_only_a_forward_that_runs_the_model_takes_the_device(monkeypatch):
    gate = device_gate.Gate()
    monkeypatch.setattr(_Model, "gate", gate, raising=False)
    monkeypatch.setattr(device_gate, "FORWARDS", {(__name__, "_Model"): "demix"})
    device_gate.install(gate)
    device_gate.install(gate)  # installed twice (a second child in one process): gated once, or it would deadlock
    model = _Model()
    assert model.demix("mix") == (True, False)
    assert model.demix("mix", is_match_mix=True) == (False, True)
    assert model.demix("mix", True) == (False, True)
    assert not gate._device.locked(), "the device is let go after the forward"
