"""tutorloop: language models that teach each other in rounds, feeding one online trainer.

Importing the package loads no torch model, Ray, vLLM or wandb; they load when used.
"""

from tutorloop.errors import UserError
from tutorloop.types import (
    Completion,
    Episode,
    Message,
    OPDExample,
    PreferencePair,
    Problem,
    Role,
    SamplingParams,
    SFTExample,
    StopReason,
    TokenScores,
    TrainBatch,
    Turn,
)

__all__ = [
    "Completion", "Episode", "Message", "OPDExample", "PreferencePair", "Problem", "Role",
    "SamplingParams", "SFTExample", "StopReason", "TokenScores", "TrainBatch", "Turn", "UserError",
]
