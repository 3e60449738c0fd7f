from tutorloop.trainers.replay import LessonBuffer
from tutorloop.types import OPDExample, SFTExample, TokenScores, TrainBatch


def _opd(version):
    return OPDExample(prompt=(), completion_ids=(1,), behavior_logprobs=(0.0,), teacher=TokenScores((0.0,)),
                      policy_version=version)


def test_stale_on_policy_lessons_are_dropped_and_offline_ones_kept():
    buffer = LessonBuffer(capacity=8)
    buffer.add(TrainBatch.of(sft=(SFTExample((), "a"),), kd=(_opd(0),)), version=0)
    buffer.add(TrainBatch.of(kd=(_opd(1),)), version=1)
    batch = buffer.take(version=2, max_staleness=1, max_per_kind=10)
    assert [e.policy_version for e in batch.get("kd")] == [1]
    assert len(batch.get("sft")) == 1 and buffer.dropped_stale == 1


def test_take_returns_newest_first_up_to_cap_and_keeps_the_rest():
    buffer = LessonBuffer(capacity=3)
    buffer.add(TrainBatch.of(sft=tuple(SFTExample((), str(i)) for i in range(5))), version=0)
    assert buffer.sizes()["sft"] == 3  # capacity evicts the oldest
    batch = buffer.take(version=0, max_staleness=0, max_per_kind=2)
    assert [e.completion for e in batch.get("sft")] == ["3", "4"]
    assert buffer.sizes()["sft"] == 1
