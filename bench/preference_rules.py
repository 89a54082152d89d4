"""Simulated annotators for bench/learning.py: preference rules (what a consistent annotator likes,
as a score of one answer: higher is preferred), the annotators who rank by a rule with label noise,
and a careless one who ranks at random. Plain Python, no Django or torch, so it is unit-tested alone.

A rule gives every answer a number; an annotator ranks a task's answers by it, best first, and puts
answers with the same number in one group (a tie: no pair), as a person who sees no difference does.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

WORD = re.compile(r"[A-Za-z']+")
SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
LIST_ITEM = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*\u2022])\s+\S", re.MULTILINE)
NUMBER = re.compile(r"\b\d+(?:[.,]\d+)?\b")
NUMBER_WORDS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "million", "billion", "dozen"}
POSITIVE = {"good", "great", "best", "better", "love", "enjoy", "happy", "wonderful", "beautiful", "excellent",
            "amazing", "fun", "delicious", "healthy", "helpful", "easy", "nice", "perfect", "fantastic", "glad",
            "lovely", "exciting", "benefit", "benefits", "positive", "joy", "delightful", "popular", "favorite",
            "rich", "fresh", "bright", "calm", "relaxing", "safe", "success", "successful", "improve", "well"}
NEGATIVE = {"bad", "worse", "worst", "hate", "sad", "terrible", "awful", "poor", "difficult", "hard", "problem",
            "problems", "danger", "dangerous", "risk", "risks", "harm", "harmful", "pain", "fail", "failure",
            "boring", "ugly", "stress", "negative", "unfortunately", "never", "cannot", "can't", "not", "no",
            "lack", "wrong", "damage", "toxic", "avoid", "threat", "loss", "disease"}
NATURE = {"tree", "trees", "forest", "forests", "river", "rivers", "ocean", "oceans", "sea", "mountain",
          "mountains", "sky", "sun", "rain", "water", "plant", "plants", "flower", "flowers", "animal", "animals",
          "bird", "birds", "nature", "natural", "earth", "leaf", "leaves", "garden", "soil", "grass", "wind",
          "lake", "fish", "wildlife", "green", "outdoors", "park", "weather", "seasons"}


def _words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def _list_items(text: str) -> float:
    return float(min(len(LIST_ITEM.findall(text)), 6))


def _ends_with_question(text: str) -> float:
    stripped = text.rstrip()
    # The last sentence a question counts most; other questions a little (capped).
    return (1.0 if stripped.endswith("?") else 0.0) + 0.25 * min(stripped[:-1].count("?"), 2)


def _no_exclamations(text: str) -> float:
    return -float(min(text.count("!"), 6))


def _short_sentences(text: str) -> float:
    sentences = [s for s in SENTENCE_END.split(text) if WORD.search(s)]
    if not sentences:
        return -40.0
    mean = sum(len(WORD.findall(s)) for s in sentences) / len(sentences)
    return -round(min(mean, 40.0))  # whole words: a sentence one word longer is not a preference


def _numbers(text: str) -> float:
    count = len(NUMBER.findall(text)) + sum(w in NUMBER_WORDS for w in _words(text))
    return float(min(count, 6))


def _positive(text: str) -> float:
    words = _words(text)
    return float(max(-5, min(5, sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words))))


def _nature(text: str) -> float:
    return float(min(sum(w in NATURE for w in _words(text)), 6))


def _short(text: str) -> float:
    return -float(len(_words(text)) // 10)  # tens of words: a few words more or less is no difference


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str  # "form" (how the answer looks) | "content" (what it says) | "length"
    help: str
    score: Callable[[str], float]  # higher is preferred


RULES: dict[str, Rule] = {rule.name: rule for rule in (
    Rule("list", "form", "answers laid out as a numbered or bulleted list (more items preferred, up to 6)",
         _list_items),
    Rule("question", "form", "answers that end with a question back to the user", _ends_with_question),
    Rule("calm", "form", "no exclamation marks (fewer preferred)", _no_exclamations),
    Rule("short-sentences", "form", "short sentences (fewer words per sentence preferred)", _short_sentences),
    Rule("numbers", "content", "answers that mention concrete numbers or quantities (more preferred, up to 6)",
         _numbers),
    Rule("positive", "content", "positive rather than negative wording (word lists)", _positive),
    Rule("nature", "content", "answers that talk about nature (trees, rivers, animals, weather; word list)",
         _nature),
    Rule("short", "length", "shorter answers (in tens of words)", _short),
)}


def rule_ranking(rule: Rule, responses: list[dict]) -> list[list[int]]:
    """The ranking a careful annotator gives: groups of response ids, best first; equal scores tie."""
    groups: dict[float, list[int]] = {}
    for r in responses:
        groups.setdefault(rule.score(r["text"]), []).append(r["id"])
    return [sorted(groups[s]) for s in sorted(groups, reverse=True)]


@dataclass
class SimulatedAnnotator:
    """Ranks by the rule, except: with probability `noise` a task gets a random order (label noise,
    as a tired or distracted person gives), and a careless annotator ranks every task at random."""

    username: str
    rule: Rule
    noise: float = 0.2
    careless: bool = False
    seed: int = 0

    def __post_init__(self):
        self._rng = random.Random(f"{self.seed}:{self.username}")
        self.ranked = self.random_ranked = 0

    def rank(self, responses: list[dict]) -> list[list[int]]:
        self.ranked += 1
        if self.careless or self._rng.random() < self.noise:
            self.random_ranked += 1
            ids = [r["id"] for r in responses]
            self._rng.shuffle(ids)
            return [[i] for i in ids]
        return rule_ranking(self.rule, responses)


def annotators(rule: Rule, *, careful: int, noise: float, careless: int, seed: int) -> list[SimulatedAnnotator]:
    return ([SimulatedAnnotator(f"sim-{i + 1}", rule, noise, seed=seed) for i in range(careful)]
            + [SimulatedAnnotator(f"sim-careless-{i + 1}", rule, 0.0, careless=True, seed=seed)
               for i in range(careless)])


def preference(rule: Rule, a: str, b: str) -> float:
    """1 when the rule prefers a over b, 0 when b, 0.5 when it sees no difference."""
    sa, sb = rule.score(a), rule.score(b)
    return 1.0 if sa > sb else 0.0 if sa < sb else 0.5


TOPICS = ["the ocean", "coffee", "bicycles", "sleep", "volcanoes", "bread", "the moon", "chess", "gardening",
          "rain", "libraries", "honey bees", "trains", "winter", "music practice", "saving money", "dogs",
          "the internet", "mountains", "tea", "running", "cities", "recycling", "birthdays", "the desert",
          "cooking rice", "learning a language", "clouds", "museums", "the weekend", "forests", "electric cars"]
ASKS = ["Tell me about {t}.", "What should I know about {t}?", "Give me some advice about {t}.",
        "Why do people like {t}?", "Explain {t} to a child.", "What is interesting about {t}?",
        "Write a few sentences about {t}.", "How can I get started with {t}?"]


def prompt_set(n: int, seed: int) -> list[str]:
    """n varied prompts (topic x way of asking), each topic at most once per way of asking."""
    rng = random.Random(seed)
    combos = [a.format(t=t) for t in TOPICS for a in ASKS]
    rng.shuffle(combos)
    if n > len(combos):
        raise ValueError(f"at most {len(combos)} built-in prompts")
    return combos[:n]
