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
