"""Constrained decoding: a causal LM that can only spell entity names (beam search over a
prefix trie of the tokenized names), for LLM-driven completion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kgweave.errors import InvalidArgumentError
from kgweave.language.components.lm import eval_mode
from kgweave.language.features.lm_scoring import LMScorer


@dataclass(frozen=True)
class GeneratedName:
    """A complete entity name produced by constrained decoding."""

    entity: int
    text: str
    logprob: float  # log P(name tokens + suffix | prompt)


class _Node:
    __slots__ = ("children", "entities")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.entities: list[int] = []


class EntityNameTrie:
    """Prefix trie over the token ids of every entity name.

    Args:
        tokenizer: tokenizes each name as ``leading + name`` (``leading=" "`` for a name after
            a space, ``""`` at the start of a sentence, where ``capitalize`` upper-cases the
            first letter as the verbalizer does).
        names: entity id -> name.
    """

    def __init__(
        self, tokenizer: Any, names: Sequence[str], leading: str = " ", capitalize: bool = False
    ) -> None:
        self.leading = leading
        self.capitalize = capitalize
        self.root = _Node()
        self.texts = [self.surface(n) for n in names]
        token_lists = tokenizer([leading + t for t in self.texts], add_special_tokens=False)[
            "input_ids"
        ]
        for entity, tokens in enumerate(token_lists):
            if not tokens:
                continue
            node = self.root
            for token in tokens:
                node = node.children.setdefault(int(token), _Node())
            node.entities.append(entity)

    def surface(self, name: str) -> str:
        """How a name appears in the slot (capitalised at the start of a sentence)."""
        return name[:1].upper() + name[1:] if self.capitalize else name

    def allowed(self, tokens: Sequence[int]) -> list[int]:
        """Tokens that may follow ``tokens`` (a prefix of some name); [] when none."""
        node = self._walk(tokens)
        return sorted(node.children) if node is not None else []

    def complete(self, tokens: Sequence[int]) -> list[int]:
        """Entities whose name is exactly ``tokens``."""
        node = self._walk(tokens)
        return list(node.entities) if node is not None else []

    def _walk(self, tokens: Sequence[int]) -> _Node | None:
        node: _Node | None = self.root
        for token in tokens:
            assert node is not None
            node = node.children.get(token)
            if node is None:
                return None
        return node


@dataclass(frozen=True)
class NameSearch:
    """Beam search for the name in a sentence's slot, with one causal LM.

    Args:
        scorer: the LM (its model, tokenizer and start token); it also scores the text after
            each complete name.
        beam_size: hypotheses kept at each step (greedy decoding is 1).
        num_return: names returned at most.
    """

    scorer: LMScorer
    beam_size: int = 8
    num_return: int = 5

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.num_return < 1:
            raise InvalidArgumentError("beam_size and num_return must be at least 1")

    @torch.no_grad()
    def constrained(
        self, trie: EntityNameTrie, prompt: str, suffix: str = "", max_steps: int = 48
    ) -> list[GeneratedName]:
        """Names the LM can only spell from ``trie``: entity names, best first.

        Every step extends each beam by one token among those the trie allows after it; a beam
        at a complete name also yields that name as a finished hypothesis, scored with the
        name's tokens plus ``log P(suffix | prompt + name)``.

        Args:
            prompt: the text before the slot (no trailing space; the trie's ``leading`` adds
                it).
            suffix: the text after the slot, scored after each complete name ("" to skip).
        Returns:
            up to ``num_return`` names, best first, each a real entity's name.
        """
        if not prompt.strip() and not suffix.strip():
            raise InvalidArgumentError("empty prompt: give the text before or after the slot")
        model, tokenizer = self.scorer.model, self.scorer.tokenizer
        prefix = [self.scorer.start]  # as LMScorer: plain text, not a chat turn
        if prompt:
            prefix += list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        beams: list[tuple[list[int], float]] = [([], 0.0)]
        finished: dict[int, tuple[str, float]] = {}  # entity -> (text, name logprob)
        with eval_mode(model) as device:
            for _ in range(max_steps):
                if not beams:
                    break
                input_ids = torch.tensor([prefix + b for b, _ in beams], device=device)
                logits = model(input_ids=input_ids).logits[:, -1].float()  # (beams, V)
                logp = torch.log_softmax(logits, dim=-1).cpu()
                expansions: list[tuple[float, list[int]]] = []
                for (tokens, score), row in zip(beams, logp, strict=True):
                    for token in trie.allowed(tokens):
                        expansions.append((score + float(row[token]), [*tokens, token]))
                expansions.sort(key=lambda x: -x[0])
                beams = []
                for score, tokens in expansions[: self.beam_size]:
                    for entity in trie.complete(tokens):
                        if entity not in finished or finished[entity][1] < score:
                            finished[entity] = (trie.texts[entity], score)
                    if trie.allowed(tokens):
                        beams.append((tokens, score))
        if not finished:
            return []
        entities = list(finished)
        totals = [finished[e][1] for e in entities]
        if suffix:
            heads = [prompt + trie.leading + finished[e][0] for e in entities]
            extra = [self.scorer.score(head, [suffix])[0] for head in heads]
            totals = [t + x for t, x in zip(totals, extra, strict=True)]
        order = sorted(range(len(entities)), key=lambda i: -totals[i])[: self.num_return]
        return [GeneratedName(entities[i], finished[entities[i]][0], totals[i]) for i in order]

    @torch.no_grad()
    def free(
        self, prompt: str, suffix: str, max_new_tokens: int = 12, proper_names: bool = False
    ) -> list[str]:
        """Names the LM writes freely after ``prompt`` (beam search, no trie): each beam's text
        up to where ``suffix`` starts (or the first sentence punctuation or line break),
        stripped.

        Args:
            prompt: the text before the slot (not empty: a causal LM writes left to right).
            suffix: the text after the slot (``"."``); its first word ends a name.
            proper_names: the graph's names are capitalised (FB15k-237, not WordNet lemmas): a
                name also ends before its first lower-case word other than a name particle
                ("of", "de", "van", ...), so "France and is the largest city" gives "France".
        Returns:
            up to ``num_return`` distinct names, most likely first (may be fewer, or none).
        """
        if not prompt.strip():
            raise InvalidArgumentError(
                "empty prompt: free generation needs the text before the slot"
            )
        model, tokenizer = self.scorer.model, self.scorer.tokenizer
        ids = [self.scorer.start, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
        with eval_mode(model) as device:
            out = model.generate(
                input_ids=torch.tensor([ids], device=device),
                attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device),
                max_new_tokens=max_new_tokens,
                num_beams=max(self.beam_size, self.num_return),
                num_return_sequences=max(self.beam_size, self.num_return),
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        stops = [x for x in (suffix.strip().split(" ")[0] if suffix.strip() else "", "\n") if x]
        names: list[str] = []
        for row in out[:, len(ids) :].tolist():
            text = tokenizer.decode(row, skip_special_tokens=True)
            name = _cut(text, stops, proper_names)
            if name and name not in names:
                names.append(name)
        return names[: self.num_return]


#: lower-case words that occur inside proper names
_PARTICLES = frozenset(
    [
        "of",
        "de",
        "da",
        "del",
        "della",
        "der",
        "den",
        "di",
        "du",
        "la",
        "le",
        "van",
        "von",
        "y",
        "the",
        "upon",
        "on",
        "am",
        "an",
        "im",
        "zu",
        "and",
        "for",
    ]
)


def _cut(text: str, stops: Sequence[str], proper_names: bool = False) -> str:
    """``text`` up to the first stop (or sentence punctuation), stripped; "" when it runs on
    without one (the name may be cut short) or is too long to be a name."""
    end = len(text)
    for stop in (*stops, ".", ",", ";", ":", "!", "?", "(", "\n"):
        at = text.find(stop)
        if 0 <= at < end:
            end = at
    if end == len(text):
        return ""
    name = text[:end].strip().strip("\"'")
    if proper_names:
        words = name.split()
        keep = 0
        for i, word in enumerate(words):
            if word[:1].islower() and (i == 0 or word not in _PARTICLES):
                break
            keep = i + 1
        while keep and words[keep - 1] in _PARTICLES:  # "France and" -> "France"
            keep -= 1
        name = " ".join(words[:keep])
    return name if 0 < len(name) <= 80 else ""
