"""Chat fine-tuning data: read, validate, clean, split, count tokens, estimate cost, add noise.

One module per step, all re-exported here (``from helpers import data``):

- :mod:`~helpers.data.jsonl`: read and write JSONL files; :class:`DataFileError`
- :mod:`~helpers.data.content`: a message's content, string or text parts, as text
- :mod:`~helpers.data.checks`: the per-example checks and their stable codes
- :mod:`~helpers.data.report`: :class:`Problem` and :class:`ValidationReport`
- :mod:`~helpers.data.validation`: :func:`validate` a file or list, :func:`load_examples`
- :mod:`~helpers.data.cleaning`: :func:`clean`
- :mod:`~helpers.data.splitting`: :func:`split`, :func:`split_file`
- :mod:`~helpers.data.tokens`: OpenAI token counts and chat-template token counts
- :mod:`~helpers.data.stats`: :func:`token_stats`, :func:`describe_stats`, :func:`percentile`
- :mod:`~helpers.data.cost`: :func:`estimate_cost`, :func:`default_epochs`, :func:`chat_cost`,
  the price tables
- :mod:`~helpers.data.noise`: :func:`make_noisy`
"""

from helpers.data.checks import (
    MESSAGE_KEYS,
    NO_TOOLS,
    ROLES,
    UNSUPPORTED_MESSAGE_KEYS,
    UNSUPPORTED_ROLES,
    UNSUPPORTED_TOP_LEVEL,
    check_example,
)
from helpers.data.cleaning import clean
from helpers.data.content import (
    TEXT_PART_SEPARATOR,
    UNSUPPORTED_PARTS,
    content_text,
    plain_messages,
)
from helpers.data.cost import (
    MAX_DEFAULT_EPOCHS,
    MAX_TARGET_EXAMPLES,
    MIN_DEFAULT_EPOCHS,
    MIN_TARGET_EXAMPLES,
    PRICES_AS_OF,
    PRICES_PER_1K_TRAINING_TOKENS,
    PRICES_PER_1M_CHAT_TOKENS,
    SEED_ARTICLE_PRICE,
    TARGET_EPOCHS,
    chat_cost,
    default_epochs,
    estimate_cost,
)
from helpers.data.jsonl import DataFileError, read_jsonl, write_jsonl
from helpers.data.noise import NOISE_KINDS, make_noisy
from helpers.data.report import Problem, ValidationReport
from helpers.data.splitting import SPLIT_NAMES, split, split_file
from helpers.data.stats import describe_stats, percentile, token_stats
from helpers.data.tokens import DEFAULT_OPENAI_MODEL, count_openai_tokens, openai_encoding
from helpers.data.validation import load_examples, validate

__all__ = [
    "DEFAULT_OPENAI_MODEL",
    "MAX_DEFAULT_EPOCHS",
    "MAX_TARGET_EXAMPLES",
    "MESSAGE_KEYS",
    "MIN_DEFAULT_EPOCHS",
    "MIN_TARGET_EXAMPLES",
    "NOISE_KINDS",
    "NO_TOOLS",
    "PRICES_AS_OF",
    "PRICES_PER_1K_TRAINING_TOKENS",
    "PRICES_PER_1M_CHAT_TOKENS",
    "ROLES",
    "SEED_ARTICLE_PRICE",
    "SPLIT_NAMES",
    "TARGET_EPOCHS",
    "TEXT_PART_SEPARATOR",
    "UNSUPPORTED_MESSAGE_KEYS",
    "UNSUPPORTED_PARTS",
    "UNSUPPORTED_ROLES",
    "UNSUPPORTED_TOP_LEVEL",
    "DataFileError",
    "Problem",
    "ValidationReport",
    "chat_cost",
    "check_example",
    "clean",
    "content_text",
    "count_openai_tokens",
    "default_epochs",
    "describe_stats",
    "estimate_cost",
    "load_examples",
    "make_noisy",
    "openai_encoding",
    "percentile",
    "plain_messages",
    "read_jsonl",
    "split",
    "split_file",
    "token_stats",
    "validate",
    "write_jsonl",
]
