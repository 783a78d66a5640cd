"""A job's progress in the engine child: the fraction only moves forward, at a bounded rate, and
each turn of a separation loop is where a cancellation stops the job."""

from __future__ import annotations

import pytest

from uvrd.processor.engine_protocol import Progress
from uvrd.processor.progress_meter import LOOP_END, Cancelled, Meter


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def meter(cancel=lambda: False, interval=0.5):
    sent: list[Progress] = []
    clock = Clock()
    return Meter(sent.append, cancel, interval, clock), sent, clock


def loading_mix(m: Meter, items):
    """Named as VR's band-reading loop is: it reads the input, it does not separate it."""
    return list(m.tqdm(items))


def test_a_loop_moves_the_fraction_forward_and_sends_at_most_once_per_interval():
    m, sent, clock = meter()
    m.begin(1)
    m.model(0, "separating with a.onnx")
    for _ in m.tqdm(range(100)):
        clock.now += 0.1
    fractions = [p.fraction for p in sent]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(LOOP_END)
    assert len(sent) <= 1 + 100 * 0.1 / 0.5 + 1  # the step's first report, then one per half second
    assert all(p.step == "separating with a.onnx" for p in sent)


def test_each_model_has_its_share_and_a_new_step_is_sent_at_once():
    m, sent, clock = meter()
    m.begin(2)
    m.model(0, "model 1 of 2")
    for _ in m.tqdm(range(4)):
        clock.now += 1
    m.model(1, "model 2 of 2")
    assert sent[-1] == Progress(0.5, "model 2 of 2", parts=2)
    for _ in m.tqdm([1, 2]):
        clock.now += 1
    assert sent[-1].fraction == pytest.approx((1 + LOOP_END) / 2)


def test_a_loop_that_reads_the_input_moves_nothing_and_a_second_pass_never_goes_back():
    m, sent, clock = meter()
    m.begin(1)
    m.model(0, "s")
    loading_mix(m, range(5))
    assert [p.fraction for p in sent] == [0.0]
    for _ in m.tqdm(range(2)):
        clock.now += 1
    top = m.fraction
    for _ in m.tqdm(range(10)):  # Demucs: the same loop again for the next shift
        clock.now += 1
        assert m.fraction == top


def test_a_cancellation_stops_the_loop_at_its_next_turn():
    asked = []
    m, _sent, _clock = meter(cancel=lambda: bool(asked))
    m.begin(1)
    m.model(0, "s")
    turns = 0
    with pytest.raises(Cancelled):
        for _ in m.tqdm(range(100)):
            turns += 1
            if turns == 3:
                asked.append(True)
    assert turns == 3


def test_nothing_is_sent_outside_a_job_as_in_a_warm_up():
    m, sent, clock = meter()
    for _ in m.tqdm(range(10)):
        clock.now += 1
    m.begin(1)
    m.end()
    for _ in m.tqdm(range(10)):
        clock.now += 1
    assert sent == []


def test_a_long_inputs_parts_share_the_models_time_and_say_so():
    m, sent, clock = meter(interval=0.0)
    m.begin(1)
    m.model(0, "separating with a.onnx")
    for part in range(4):
        m.part(part, 4, f"part {part + 1} of 4")
        for _ in m.tqdm(range(10)):
            clock.now += 0.1
    fractions = [p.fraction for p in sent]
    assert fractions == sorted(fractions)
    # Each part's loop fills a quarter of the model's share; a part's start is the last one's end.
    at_part_start = {p.step: p.fraction for p in reversed(sent)}
    assert [at_part_start[f"part {k} of 4"] for k in (2, 3, 4)] == pytest.approx([1 / 4, 2 / 4, 3 / 4])
    assert fractions[-1] == pytest.approx(3 / 4 + LOOP_END / 4)
    assert {p.parts for p in sent if p.step.startswith("part")} == {4}


def test_several_models_each_take_their_share_and_count_in_the_parts():
    m, sent, clock = meter(interval=0.0)
    m.begin(2)
    for index in range(2):
        m.model(index, f"model {index + 1}")
        m.part(0, 3, f"model {index + 1}, part 1 of 3")
        for _ in m.tqdm(range(10)):
            clock.now += 0.1
    fractions = [p.fraction for p in sent]
    assert fractions == sorted(fractions)
    assert max(p.fraction for p in sent if p.step.startswith("model 1")) <= 0.5
    assert sent[-1].parts == 6
