"""The simulated annotators of bench/learning.py: what each rule prefers, that ties are groups, that
label noise randomises about the share of tasks asked for, and that the careless annotator's
rankings carry no preference."""

from __future__ import annotations

import itertools

import pytest

from bench.preference_rules import RULES, SimulatedAnnotator, annotators, preference, prompt_set, rule_ranking

# For each rule: an answer the rule prefers, then one it likes less.
PREFERRED = {
    "list": ("Try these:\n1. Rest well\n2. Drink water\n3. Walk daily", "Rest well and drink water."),
    "question": ("Tea is calming. Would you like a recipe?", "Tea is calming. It has caffeine."),
    "calm": ("Coffee is a drink made from roasted beans.", "Coffee is great! You will love it!"),
    "short-sentences": ("Bread needs flour. Add water. Bake it.",
                        "Bread is made by mixing flour with water and yeast and then baking the dough for an hour."),
    "numbers": ("A spider has 8 legs and 2 body parts.", "A spider has legs and a body."),
    "positive": ("Running is fun, healthy and a great joy.", "Running is hard and a bad risk for your knees."),
    "nature": ("Walk in the forest by the river and listen to the birds.", "Walk in the mall and look at shops."),
    "short": ("Yes.", " ".join(["word"] * 40)),
}


def test_every_rule_has_a_case_and_there_are_form_and_content_rules():
    assert set(PREFERRED) == set(RULES)
    kinds = {r.kind for r in RULES.values()}
    assert {"form", "content"} <= kinds and len(RULES) >= 4


@pytest.mark.parametrize("name", sorted(PREFERRED))
def test_rule_prefers_what_it_says(name):
    better, worse = PREFERRED[name]
    rule = RULES[name]
    assert rule.score(better) > rule.score(worse)
    assert preference(rule, better, worse) == 1.0 and preference(rule, worse, better) == 0.0
    assert preference(rule, better, better) == 0.5


def test_ranking_groups_ties_best_first():
    responses = [{"id": 1, "text": "No numbers here."}, {"id": 2, "text": "It costs 5 dollars and 3 cents."},
                 {"id": 3, "text": "Nothing either."}, {"id": 4, "text": "About 7 of them."}]
    assert rule_ranking(RULES["numbers"], responses) == [[2], [4], [1, 3]]


def test_noise_randomises_about_that_share_of_tasks():
    person = SimulatedAnnotator("a", RULES["numbers"], noise=0.2, seed=3)
    responses = [{"id": i, "text": f"{'1 ' * i}x"} for i in range(4)]
    rankings = [person.rank(responses) for _ in range(2000)]
    assert 0.17 < person.random_ranked / 2000 < 0.23
    expected = rule_ranking(RULES["numbers"], responses)
    off = sum(r != expected for r in rankings)
    # A random order equals the rule's one time in 24.
    assert off <= person.random_ranked and off > 0.9 * person.random_ranked


def test_careless_annotator_ranks_at_random():
    team = annotators(RULES["numbers"], careful=2, noise=0.0, careless=1, seed=0)
    careless = [p for p in team if p.careless]
    assert len(team) == 3 and len(careless) == 1
    responses = [{"id": i, "text": f"{'1 ' * i}x"} for i in range(3)]
    firsts = [careless[0].rank(responses)[0][0] for _ in range(3000)]
    # Each response comes first about a third of the time, whatever the rule says.
    for i in range(3):
        assert 0.29 < firsts.count(i) / 3000 < 0.37
    # The careful ones (noise 0) always follow the rule.
    assert all(p.rank(responses) == [[2], [1], [0]] for p in team if not p.careless)


def test_prompt_set_is_varied_and_repeatable():
    prompts = prompt_set(64, seed=1)
    assert prompts == prompt_set(64, seed=1) and len(set(prompts)) == 64
    assert len({p.split(" ")[0] for p in prompts}) >= 5  # several ways of asking
    assert not set(prompts[:48]) & set(prompts[48:])
    assert list(itertools.islice(prompt_set(64, seed=2), 5)) != prompts[:5]
