"""A claim's states through rebalances: held, revoked while one runs, then held again or lost."""

from __future__ import annotations

from kafka import TopicPartition

from uvrd.kafka.group_member import Claim, ClaimState

TP = TopicPartition("tasks", 0)
OTHER = TopicPartition("tasks", 1)


def test_given_back_in_the_next_generation_it_is_held_again():
    claim = Claim(TP, generation=4)
    claim.revoke()
    assert claim.state is ClaimState.REVOKED and not claim.held and not claim.lost
    assert claim.settle({TP, OTHER}, generation=5) is ClaimState.HELD
    assert claim.generation == 5


def test_assigned_elsewhere_it_is_lost():
    claim = Claim(TP, generation=4)
    claim.revoke()
    assert claim.settle({OTHER}, generation=5) is ClaimState.LOST and claim.lost


def test_back_after_a_generation_without_us_it_is_lost():
    """Frozen past its session: another member owned the partition for a generation (and may have
    committed the record), so having it again now does not make the work ours."""
    claim = Claim(TP, generation=4)
    claim.revoke()
    assert claim.settle({TP}, generation=6) is ClaimState.LOST
    assert claim.generation == 4, "the generation it was lost in is what the log says"


def test_lost_stays_lost():
    claim = Claim(TP, generation=4)
    claim.revoke()
    claim.settle(set(), generation=5)
    claim.revoke()
    assert claim.settle({TP}, generation=6) is ClaimState.LOST


def test_made_outside_a_generation_it_cannot_be_given_back():
    claim = Claim(TP, generation=None)
    claim.revoke()
    assert claim.settle({TP}, generation=1) is ClaimState.LOST
