"""Where a stop pattern ends a sampled sequence, for backends that cannot stop on a regex.

vLLM and OpenAI-compatible servers stop on strings and token ids only, so `SamplingParams.stop_regex`
is applied after sampling: the sequence is cut after the first token whose prefix text matches,
which is where the HF generator's per-step check would have stopped it.
"""

from __future__ import annotations

import re
from typing import Callable


def stop_length(num_tokens: int, prefix_text: Callable[[int], str], pattern: str) -> int | None:
    """The fewest leading tokens whose text matches `pattern`, or None when no prefix matches.

    A prefix that matches stays matched as tokens are appended, so a binary search over the
    prefix length finds the first one with O(log n) decodes instead of n.
    """
    regex = re.compile(pattern)
    if not num_tokens or not regex.search(prefix_text(num_tokens)):
        return None
    lo, hi = 1, num_tokens
    while lo < hi:
        mid = (lo + hi) // 2
        if regex.search(prefix_text(mid)):
            hi = mid
        else:
            lo = mid + 1
    return lo
