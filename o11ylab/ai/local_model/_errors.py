"""The errors a local generation raises; each message says what to change."""

from __future__ import annotations

from ...errors import O11yLabError


class LocalModelError(O11yLabError):
    """A local generation could not run as asked. The message says what to change."""


class EmptyPromptError(LocalModelError, ValueError):
    """An empty prompt or an empty list of messages."""


class ContextWindowExceededError(LocalModelError, ValueError):
    """The prompt plus the tokens asked for do not fit the model's context window."""

    def __init__(self, model: str, input_tokens: int, max_new_tokens: int, context_window: int):
        self.input_tokens = input_tokens
        self.max_new_tokens = max_new_tokens
        self.context_window = context_window
        if input_tokens >= context_window:
            detail = f"the prompt alone is {input_tokens} tokens"
        else:
            detail = (
                f"the prompt is {input_tokens} tokens and {max_new_tokens} more were asked "
                f"for ({input_tokens + max_new_tokens} in all)"
            )
        super().__init__(
            f"{model} has a context window of {context_window} tokens, but {detail}. "
            "Shorten the prompt or ask for fewer new tokens (max_new_tokens / max_tokens)."
        )
