"""tutorloop: language models that teach each other in rounds, feeding one online trainer.

Importing the package loads no torch model, Ray, vLLM or wandb; they load when used.
"""

from tutorloop.errors import UserError
from tutorloop.types import (
    Completion,
    Episode,
    Lesson,
    Message,
    Problem,
    Role,
    SamplingParams,
    StopReason,
    TokenScores,
    Turn,
)

__all__ = [
    "Completion", "Episode", "Lesson", "Message", "Problem", "Role",
    "SamplingParams", "StopReason", "TokenScores", "Turn", "UserError",
]
