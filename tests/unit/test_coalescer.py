import asyncio

from tutorloop.generators.hf import Coalescer


def test_concurrent_requests_share_one_batched_call():
    calls = []

    def run(key, items):
        calls.append((key, list(items)))
        return [item * 10 for item in items]

    async def main():
        coalescer = Coalescer(run)

        async def episode(i):
            first = await coalescer.submit("gen", [i])
            second = await coalescer.submit("gen", [i + 100])  # the next stage batches again
            return first + second

        return await asyncio.gather(*(episode(i) for i in range(5)))

    results = asyncio.run(main())
    assert results == [[i * 10, (i + 100) * 10] for i in range(5)]
    assert [len(items) for _, items in calls] == [5, 5]


def test_a_failing_batch_fails_every_waiter_without_hanging():
    def run(key, items):
        raise RuntimeError("boom")

    async def main():
        coalescer = Coalescer(run)
        return await asyncio.gather(*(coalescer.submit("k", [i]) for i in range(3)), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))
