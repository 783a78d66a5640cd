"""Fair share (``processor.fair_share = true``): within a priority, the API keys' tasks run in turns, on
one processor and across two, and every task still ends in exactly one result, a task that ended
above one still running included when it is redelivered.

The engine child is scripted (scripted_engine.py): the model is not the point.  When each task
started and was queued is read from outside, from its result (``started_at``, ``submitted_at``);
which task runs now from the daemon (its separation's run).  The flood prints its waits:
``pytest -s`` shows them, and ``-rA`` the summary lines.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import requests

import scripted_engine
from separation_service import AUTH, api_settings, start_api
from support import bearer, wait_until
from devtools import tinymodel
from uvrd import messages
from uvrd.processor.daemon import Processor

FLOOD_A, FLOOD_B = 100, 5


@pytest.fixture(scope="module")
def short_audio(tmp_path_factory) -> Path:
    return tinymodel.write_sample(tmp_path_factory.mktemp("short") / "short.wav", seconds=1)


def fair(stack, name: str, **settings):
    config = stack.write_config(f"fair-{name}.toml", fair_share=True, **settings)
    return stack.in_process(Processor, config=config, name=name, engine=scripted_engine.engine)


def queue(stack, kafka, audio: Path, key: str, behaviour: str | None = None, seconds: float | None = None) -> dict:
    """A task of API key *key*, queued now (as the api queues it: keyed by its uuid, with the
    *seconds* of audio the api measured, if given)."""
    name = scripted_engine.input_name(behaviour) if behaviour else None
    said = {"audio_seconds": seconds} if seconds is not None else {}
    task = stack.task(stack.spool_copy(audio, name), key=key, submitted_at=messages.now_iso(), **said)
    kafka.send(stack.tasks, task)
    return task


def results_by_task(kafka, stack) -> dict[str, list[dict]]:
    by_task: dict[str, list[dict]] = {}
    for r in kafka.results(stack.results):
        by_task.setdefault(r["task_uuid"], []).append(r)
    return by_task




def _at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _waits(results: list[dict]) -> list[float]:
    return [_at(r["started_at"]) - _at(r["submitted_at"]) for r in results]


def _figures(waits: list[float]) -> str:
    return f"median {statistics.median(waits):.2f} s, max {max(waits):.2f} s"


# The audio seconds each key's tasks say (None: none said, one quantum each, as in messages from
# before the api sent them).  The scripted engine takes milliseconds whatever they say: what they
# change is how many of B's tasks a turn runs.
UNSAID, MIXED = (None, None), (300.0, 30.0)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("stack,processors,pipeline,lengths",
                         [(1, 1, False, UNSAID), (2, 2, False, UNSAID), (1, 1, True, UNSAID), (1, 1, False, MIXED)],
                         indirect=["stack"], ids=["one", "two", "pipelined", "one-mixed-lengths"])
def test_a_flood_of_one_key_does_not_hold_back_another_keys_tasks(stack, kafka, short_audio, processors, pipeline,
                                                                  lengths, record_property):
    """Key A queues 100 tasks, then key B queues 5: each of B's starts before half of A's have (with
    one processor, two, and one with processor.pipeline, which takes its next task from the same turns).
    With A's tasks 5 minutes long and B's 30 s, B's turns run its tasks two at a time, where A's take
    five turns each: B's five start within two of A's."""
    workers = [fair(stack, f"p{i}", pipeline=pipeline) for i in range(processors)]
    for w in workers:
        w.wait_ready()
    # Every processor has its partitions before the flood, so that none joins in the middle of it.
    def default_priority(w) -> set:
        return {tp for tp in w.handler.member.consumer.assignment() if tp.topic == stack.tasks}
    wait_until(lambda: all(default_priority(w) for w in workers)
               and sum(len(default_priority(w)) for w in workers) == stack.partitions, 60, "each processor assigned")

    a = [queue(stack, kafka, short_audio, "key-a", seconds=lengths[0]) for _ in range(FLOOD_A)]
    b = [queue(stack, kafka, short_audio, "key-b", seconds=lengths[1]) for _ in range(FLOOD_B)]
    kafka.wait_for_records(stack.results, FLOOD_A + FLOOD_B, 180, "every task's result")

    done = results_by_task(kafka, stack)
    assert {t["task_uuid"] for t in a + b} == set(done), "every task ended"
    assert all(len(v) == 1 for v in done.values()), "in exactly one result each"
    assert all(v[0]["success"] for v in done.values())
    a_results = [done[t["task_uuid"]][0] for t in a]
    b_results = [done[t["task_uuid"]][0] for t in b]
    a_starts = sorted(_at(r["started_at"]) for r in a_results)
    for r in b_results:
        before = sum(1 for s in a_starts if s < _at(r["started_at"]))
        assert before < FLOOD_A // 2, f"one of B's tasks started after {before} of A's"
    b_starts = sorted(_at(r["started_at"]) for r in b_results)
    amid_b = sum(1 for s in a_starts if b_starts[0] < s < b_starts[-1])
    if lengths == MIXED:
        assert amid_b <= 2, f"{amid_b} of A's 5-minute tasks started amid B's 30-s ones"

    line = (f"fair share, {processors} {'pipelined ' if pipeline else ''}processor{'s' if processors > 1 else ''}"
            f"{', A 300 s and B 30 s a task' if lengths == MIXED else ''}: B's waits {_figures(_waits(b_results))}"
            f" (B's last started after {max(sum(1 for s in a_starts if s < _at(r['started_at'])) for r in b_results)}"
            f" of A's {FLOOD_A}, {amid_b} of A's amid B's); A's waits {_figures(_waits(a_results))}")
    print(line)
    record_property("summary", line)
    # Stopped together: the engines' children share the test process's resource tracker, which the
    # first processor to stop waits for (engine.py's close) until every child is gone.
    for w in workers:
        w.daemon.stop()
    assert [w.wait_exit() for w in workers] == [0] * processors


@pytest.mark.parametrize("batched", [False, True], ids=["one_by_one", "in_one_batch"])
def test_a_task_that_ended_above_one_still_running_is_not_run_again_when_redelivered(stack, kafka, short_audio,
                                                                                     batched):
    """Offsets 0-3: A's a0 (running while the rest arrive), a1, a2, then B's b0.  In turns, b0 runs
    before a2 and ends above it; the stop abandons a2 (a drain window of 1 s), so the committed offset
    stays at a2 and the next processor gets a2 and b0 again: it runs a2 and settles b0 without a run
    or a second result.  Sequential processors: a pipelined one chooses its next task as the one
    before enters the model, maybe before b0 is read (its turns are the flood's pipelined case).

    *batched*: a1, a2 and b0 arrive in one record batch, as a burst through the api writes them.  Tansu
    answers a ListOffsets for the partition's end with the last batch's first offset + 1 (a2's), so
    b0 looked newer than the second processor's start, and it ran again (the single-host package's
    "a stop with tasks queued" test, on CI)."""
    first = fair(stack, "first", drain_timeout=1, pipeline=False).wait_ready()
    a0 = queue(stack, kafka, short_audio, "key-a", "slow-2s")
    wait_until(lambda: (run := first.handler.separation.run) is not None and run.task_uuid == a0["task_uuid"],
               60, "a0 running")
    if batched:
        a1, a2, b0 = (stack.task(stack.spool_copy(short_audio, scripted_engine.input_name(b) if b else None),
                                 key=key, submitted_at=messages.now_iso())
                      for key, b in (("key-a", None), ("key-a", "slow-4s"), ("key-b", None)))
        kafka.send_together(stack.tasks, [a1, a2, b0])
    else:
        a1 = queue(stack, kafka, short_audio, "key-a")
        a2 = queue(stack, kafka, short_audio, "key-a", "slow-4s")
        b0 = queue(stack, kafka, short_audio, "key-b")
    wait_until(lambda: (run := first.handler.separation.run) is not None and run.task_uuid == a2["task_uuid"],
               60, "a2 running, after b0 in B's turn")
    assert set(results_by_task(kafka, stack)) == {a0["task_uuid"], a1["task_uuid"], b0["task_uuid"]}
    assert kafka.committed(stack.group, stack.tasks) == {0: 2}, "b0 ended above a2: the offset stays at a2"
    first.stop()
    assert kafka.committed(stack.group, stack.tasks) == {0: 2}, "a2 abandoned by the stop, left for redelivery"

    second = fair(stack, "second", pipeline=False).wait_ready()
    wait_until(lambda: kafka.committed(stack.group, stack.tasks) == {0: 4}, 120, "a2 and b0 committed again")
    done = results_by_task(kafka, stack)
    assert Counter({k: len(v) for k, v in done.items()}) == Counter(
        {t["task_uuid"]: 1 for t in (a0, a1, a2, b0)}), "one result each, b0's not repeated"
    assert all(v[0]["success"] for v in done.values())
    assert kafka.runs_started(stack.status, b0["task_uuid"]) == 1, "b0 ran once"
    assert second.stop() == 0


def test_keys_flooding_through_the_api_take_turns(stack, kafka, short_audio, record_property):
    """The flood as clients send it: two submit keys of a real ``uvrd api``, A's 100 uploads then B's 5,
    each task message carrying its key and the audio seconds the api measured; then a processor."""
    api = start_api(stack, stack.write_config("api.toml", api=api_settings()))
    tokens = {}
    for name in ("flood-a", "flood-b"):
        added = requests.post(f"{api}/v1/keys", headers=AUTH, json={"name": name, "scope": "submit"}, timeout=30)
        assert added.status_code == 201, added.text
        tokens[name] = added.json()["token"]
        wait_until(lambda token=tokens[name]: requests.get(f"{api}/v1/usage", headers=bearer(token),
                                                           timeout=30).status_code == 200, 30, f"the api to know {name}")
    content = short_audio.read_bytes()

    def upload(name: str) -> str:
        posted = requests.post(f"{api}/v1/tasks", headers=bearer(tokens[name]), timeout=60,
                               files={"audio": ("song.wav", content)})
        assert posted.status_code == 202, posted.text
        return posted.json()["task_uuid"]

    a = [upload("flood-a") for _ in range(FLOOD_A)]
    b = [upload("flood-b") for _ in range(FLOOD_B)]
    queued = {json.loads(r.value)["task_uuid"]: json.loads(r.value) for r in kafka.read_all(stack.tasks)}
    assert {queued[t]["key"] for t in a} == {"flood-a"} and {queued[t]["key"] for t in b} == {"flood-b"}
    assert all(queued[t]["audio_seconds"] == 1.0 for t in a + b), "the length the api measured"

    worker = fair(stack, "p").wait_ready()
    kafka.wait_for_records(stack.results, FLOOD_A + FLOOD_B, 180, "every task's result")
    done = results_by_task(kafka, stack)
    assert set(done) == set(a + b) and all(len(v) == 1 and v[0]["success"] for v in done.values())
    a_starts = sorted(_at(done[t][0]["started_at"]) for t in a)
    b_after = [sum(1 for s in a_starts if s < _at(done[t][0]["started_at"])) for t in b]
    assert max(b_after) < FLOOD_A // 2, f"B's tasks started after {b_after} of A's"
    line = (f"fair share through the api, 1 processor: B's last started after {max(b_after)} of A's {FLOOD_A}; "
            f"B's waits {_figures(_waits([done[t][0] for t in b]))}, A's {_figures(_waits([done[t][0] for t in a]))}")
    print(line)
    record_property("summary", line)
    assert worker.stop() == 0
