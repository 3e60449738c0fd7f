from tutorloop.trainers.replay import LessonBuffer
from tutorloop.types import Lesson, TokenScores


def _kd(version):
    return Lesson("kd", (), (1,), behavior_logprobs=(0.0,), teacher=TokenScores((0.0,)), policy_version=version)


def _of(lessons, objective):
    return [x for x in lessons if x.objective == objective]


def test_stale_on_policy_lessons_are_dropped_and_offline_ones_kept():
    buffer = LessonBuffer(capacity=8)
    buffer.add([Lesson("sft", (), (7,)), _kd(0)])
    buffer.add([_kd(1)])
    batch = buffer.take(version=2, max_staleness=1, max_per_kind=10)
    assert [e.policy_version for e in _of(batch, "kd")] == [1]
    assert len(_of(batch, "sft")) == 1 and buffer.dropped_stale == 1


def test_a_lesson_no_policy_sampled_never_goes_stale():
    """GKD's dataset half: a reference solution the teacher scored is a `kd` lesson with no policy
    version; dropping it as stale would leave only the on-policy half after round 0."""
    buffer = LessonBuffer(capacity=8)
    reference = Lesson("kd", (), (1,), teacher=TokenScores((0.0,)), policy_version=None)
    buffer.add([reference, _kd(0)])
    assert _of(buffer.take(version=5, max_staleness=0, max_per_kind=10), "kd") == [reference]
    assert buffer.dropped_stale == 1


def test_take_returns_newest_first_up_to_cap_and_keeps_the_rest():
    buffer = LessonBuffer(capacity=3)
    buffer.add([Lesson("sft", (), (i,)) for i in range(5)])
    assert buffer.sizes()["sft"] == 3  # capacity evicts the oldest
    batch = buffer.take(version=0, max_staleness=0, max_per_kind=2)
    assert [e.target_ids for e in _of(batch, "sft")] == [(3,), (4,)]
    assert buffer.sizes()["sft"] == 1
