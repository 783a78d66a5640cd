"""The read-your-writes barrier of a topic view (uvrd/kafka/topic_view.py) and how the api answers
a task it does not know (uvrd/api/query.py): the broker's end offsets are a stand-in, the reader's
progress is fed by hand, as its thread reports it after each poll."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest
from flask import Flask

from uvrd.api import errors, query
from uvrd.api.auth import Authenticator
from uvrd.api.context import EXTENSION, ApiContext
from uvrd.boards import status
from uvrd.config import Config, KafkaConfig
from uvrd.kafka.topic_view import TopicView
from uvrd.runtime.deadline import Deadline

TASK = "6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
BOUND = Deadline.after  # a bound that only ends a test that fails


class Ends:
    """Stands in for EndOffsets: answers *end* (None: the broker did not answer), then runs
    *meanwhile*, as the reader's thread would move on while the barrier waits."""

    def __init__(self, end: dict[int, int] | None, meanwhile=None):
        self.end = end
        self.meanwhile = meanwhile
        self.asked = 0

    def now(self, deadline: Deadline) -> dict[int, int] | None:
        self.asked += 1
        if self.meanwhile is not None:
            threading.Thread(target=self.meanwhile, daemon=True).start()
        return self.end

    def close(self) -> None:
        pass


def view_with(ends: Ends, applied: dict[int, int] | None = None) -> TopicView:
    view = TopicView(KafkaConfig(), "uvrd.status", fold=lambda rec: None)  # never started
    view._ends = ends
    if applied:
        view._applied_through(applied)
    return view


def test_a_reader_already_at_the_end_passes_at_once():
    view = view_with(Ends({0: 5, 1: 0}), applied={0: 5})
    assert view.read_through_end(BOUND(30))


def test_the_barrier_waits_for_the_reader_to_fold_in_what_was_there_when_it_was_called():
    moves = []

    def reader_moves_on():
        for position in (3, 5):
            moves.append(position)
            view._applied_through({0: position})
    view = view_with(Ends({0: 5}, reader_moves_on), applied={0: 2})
    assert view.read_through_end(BOUND(30))
    assert view.reached({0: 5}) and moves[-1] == 5


def test_a_reader_that_stays_behind_or_a_broker_that_does_not_answer_is_not_caught_up():
    assert not view_with(Ends({0: 5}), applied={0: 4}).read_through_end(Deadline.after(0))
    assert not view_with(Ends(None), applied={0: 5}).read_through_end(BOUND(30))


def test_a_stop_ends_the_wait_as_not_caught_up():
    view = view_with(Ends({0: 5}, lambda: view.stop(timeout=0)), applied={0: 1})
    assert not view.read_through_end(BOUND(30))


# -- GET /v1/tasks/<uuid> for a task this worker's board does not know -------------------------------------

def client_with(board: status.StatusBoard):
    app = Flask("uvrd.api")
    errors.register(app, 1 << 20)
    app.register_blueprint(query.blueprint)
    cancellations = SimpleNamespace(requested_at=lambda task_uuid: None)
    app.extensions[EXTENSION] = ApiContext(Config(), Authenticator(("token",), (), "secret"), None,
                                           SimpleNamespace(board=board, cancellations=cancellations),
                                           SimpleNamespace(name="local"))
    return app.test_client()


def get(client):
    return client.get(f"/v1/tasks/{TASK}", headers={"Authorization": "Bearer token"})


def board_with(ends: Ends) -> status.StatusBoard:
    board = status.StatusBoard(KafkaConfig(), "uvrd.status")  # never started: records are folded by hand
    board._view._ends = ends
    board._view._caught_up.set()
    return board


def queued(board: status.StatusBoard) -> None:
    """Another worker's "queued" record reaches this worker's reader, which then moves on."""
    board.fold(SimpleNamespace(value=json.dumps({"task_uuid": TASK, "state": "queued"}).encode()))
    board._view._applied_through({0: 1})


def test_a_task_accepted_elsewhere_a_moment_ago_is_found_once_the_topic_is_read_through():
    board = board_with(Ends({0: 1}, lambda: queued(board)))
    answer = get(client_with(board))
    assert answer.status_code == 200 and answer.json["state"] == "queued", answer.json


@pytest.mark.parametrize("end", [{0: 0}, {}])
def test_a_task_unknown_once_the_topic_is_read_through_is_a_404(end):
    answer = get(client_with(board_with(Ends(end))))
    assert answer.status_code == 404 and answer.json == {"error": f"no task {TASK}"}


def test_a_worker_that_cannot_read_the_topic_through_says_503_never_404():
    board = board_with(Ends(None))
    answer = get(client_with(board))
    assert answer.status_code == 503 and answer.headers["Retry-After"] == query.RETRY_AFTER_S
    assert "could not be read from Kafka in time" in answer.json["error"]
