import torch

from tutorloop.trainers.weight_sync import pack, unpack


def test_pack_round_trips_every_dtype_and_shape_across_buckets():
    tensors = [("a", torch.randn(3, 5)), ("b", torch.randn(7).to(torch.bfloat16)), ("c", torch.arange(4)),
               ("empty", torch.zeros(0)), ("d", torch.randn(2, 2, 2, dtype=torch.float64))]
    packed = pack(tensors, bucket_bytes=64)
    assert len(packed.buckets) > 1
    back = dict(unpack(packed))
    for name, t in tensors:
        assert back[name].dtype == t.dtype and back[name].shape == t.shape
        assert torch.equal(back[name], t)


def test_shared_segment_round_trips_and_is_rewritten_in_place():
    from tutorloop.trainers.weight_sync import SharedSegment, as_named_tensors

    tensors = [("a", torch.randn(3, 5)), ("b", torch.randn(7).to(torch.bfloat16)), ("c", torch.randn(2, 2))]
    segment = SharedSegment()
    first = segment.write(tensors)
    assert first is not None and all(offset % 64 == 0 for offset, _ in first.spans)
    back = dict(as_named_tensors(first))
    assert all(torch.equal(back[n], t) for n, t in tensors)
    changed = [(n, t + 1) for n, t in tensors]
    second = segment.write(changed)
    assert second.path == first.path  # same layout: the same segment, rewritten
    back = dict(as_named_tensors(second))
    assert all(torch.equal(back[n], t) for n, t in changed)
    path = first.path
    segment.close()
    import os

    assert not os.path.exists(path)


def test_shared_segment_declines_when_shm_lacks_room(monkeypatch):
    from tutorloop.trainers import weight_sync

    monkeypatch.setattr(weight_sync, "_free_bytes", lambda path: 1000)
    assert weight_sync.SharedSegment().write([("a", torch.randn(1000))]) is None


def test_orphaned_segments_of_dead_writers_are_removed(tmp_path, monkeypatch):
    from tutorloop.trainers import weight_sync

    monkeypatch.setattr(weight_sync, "SHM_DIR", tmp_path)
    dead = tmp_path / f"{weight_sync.SHM_PREFIX}999999999-abc"
    alive = tmp_path / f"{weight_sync.SHM_PREFIX}{__import__('os').getpid()}-abc"
    dead.write_bytes(b"x")
    alive.write_bytes(b"x")
    weight_sync._remove_orphans()
    assert not dead.exists() and alive.exists()


def test_copy_into_flat_layout_equals_per_tensor_copy_and_keeps_parameters():
    from tutorloop.trainers.weight_sync import copy_into

    def params():
        torch.manual_seed(0)
        return {f"p{i}": torch.nn.Parameter(torch.randn(4, i + 1).to(torch.bfloat16)) for i in range(5)}

    sent = [(f"p{i}", torch.randn(4, i + 1)) for i in range(5)]  # fp32 sender, bf16 receiver as in the default
    flat, plain, layout = params(), params(), {}
    ids = {n: id(p) for n, p in flat.items()}
    for _ in range(2):  # the first sync lays the parameters out flat, the second reuses it
        copy_into(flat, pack(sent), layout)
        copy_into(plain, pack(sent), None)
        sent = [(n, t * 2) for n, t in sent]
    assert layout["flats"] and all(id(p) == ids[n] for n, p in flat.items())
    assert all(torch.equal(flat[n], plain[n]) for n in flat)
    storages = {p.untyped_storage().data_ptr() for p in flat.values()}
    assert len(storages) == 1  # one flat tensor under every parameter


def test_copy_into_names_unknown_tensors():
    import pytest

    from tutorloop.trainers.weight_sync import copy_into

    with pytest.raises(ValueError, match="nope"):
        copy_into({"a": torch.zeros(2)}, [("nope", torch.zeros(2))], None)
