"""A byte-level BPE tokenizer trained on the graph's own text.

The small language model that kgweave trains when no ``language_model`` is configured needs a
vocabulary that fits the graph: entity names, relation phrases, descriptions. Training one takes
well under a second on the demo graph, and it is deterministic: the same texts in the same order
always give the same ``tokenizer.json``.

Byte-level means every string can be encoded (no unknown token), and a word's tokens do not
depend on the text before it as long as the word starts after a space: ``" Warsaw"`` is
tokenized the same at the end of any sentence. Constrained decoding over entity names
(:mod:`kgweave.language.features.completion`) relies on that.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from kgweave.errors import ArtifactError, InvalidArgumentError, NotFoundError

TOKENIZER_FILE = "tokenizer.json"
PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
SPECIAL_TOKENS = [PAD, BOS, EOS]


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` (corpus sentences and entity names).

    Args:
        texts: the training text, one string per sentence or name; order matters only for
            tie-breaking, so pass it in a fixed order for reproducible vocabularies.
        vocab_size: largest vocabulary, the 256 byte symbols and 3 special tokens included.
        min_frequency: merges seen fewer times than this are not learned.
    Returns:
        a fast tokenizer with ``<|pad|>`` (id 0), ``<|bos|>`` (1) and ``<|eos|>`` (2).
    """
    items = [t for t in texts if t and t.strip()]
    if not items:
        raise InvalidArgumentError("cannot train a tokenizer on no text")
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise InvalidArgumentError(
            f"vocab_size {vocab_size} is too small for a byte-level tokenizer (at least "
            f"{256 + len(SPECIAL_TOKENS)})"
        )
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(items, trainer=trainer)
    return _wrap(backend)


def _wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: Path) -> Path:
    """Write ``tokenizer.json`` into ``folder``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TOKENIZER_FILE
    tmp = path.with_name(path.name + ".tmp")
    tokenizer.backend_tokenizer.save(str(tmp))
    tmp.replace(path)
    return path


def load_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer written by :func:`save_tokenizer` (a ``tokenizer.json`` or its folder).

    Raises:
        NotFoundError: no such file.
        ArtifactError: the file is not a valid tokenizer or lacks the special tokens.
    """
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise NotFoundError(f"tokenizer file {file} does not exist")
    try:
        backend = Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        raise ArtifactError(f"{file}: not a valid tokenizer ({exc})") from exc
    missing = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
    if missing:
        raise ArtifactError(f"{file}: tokenizer lacks special tokens {', '.join(missing)}")
    return _wrap(backend)
