"""Built-in tasks for circuit discovery, generated from templates written for this project.

A task item is a prompt that ends right before the answer, the right answer and a
distractor; the task's own measure is logit(answer) - logit(distractor) at the last
prompt position (the "logit difference"), and accuracy is how often it is positive.
Scoring and evaluation items come from different seeds, so no evaluated item was scored.

  ioi        indirect object identification (Wang et al. 2022): "When Mary and John went
             to the store, John gave a drink to" -> " Mary", not " John"
  agreement  subject-verb number agreement across an attractor noun of the other number:
             "The keys to the cabinet" -> " are", not " is"
  agreement-subject  the same items; the counterpart flips the subject's number, so the answer changes
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskItem:
    prompt: str  # ends right before the answer
    answer: str  # the right next word (a leading space is added when tokenizing)
    distractor: str  # the wrong one the model might prefer
    corrupted: str | None = None  # the same sentence with what decides the answer taken away (activation patching)


# --- IOI --------------------------------------------------------------------------------
_NAMES = [
    "Mary", "John", "Alice", "Bob", "Sarah", "James", "Emma", "David", "Laura", "Michael",
    "Anna", "Tom", "Kate", "Paul", "Lisa", "Mark", "Rachel", "Daniel", "Sophie", "Peter",
]
_PLACES = ["store", "park", "school", "station", "market", "library", "beach", "office", "garden", "cafe"]
_OBJECTS = ["a drink", "a book", "a letter", "an apple", "a ticket", "a present", "a pen", "a key", "a map", "a phone"]
_IOI_TEMPLATES = [
    "When {a} and {b} went to the {place}, {s} gave {obj} to",
    "After {a} and {b} arrived at the {place}, {s} handed {obj} to",
    "While {a} and {b} were at the {place}, {s} passed {obj} to",
    "Then, {a} and {b} walked to the {place}. {s} gave {obj} to",
    "Yesterday {a} and {b} visited the {place}, and {s} showed {obj} to",
]


def _counterpart_rng(seed: int) -> random.Random:
    """The corrupted counterparts draw from a stream of their own, so the items are those of earlier versions."""
    return random.Random(f"corrupted-{seed}")


def ioi_items(n: int, seed: int) -> list[TaskItem]:
    """Corrupted counterpart: the same sentence with three other names (ABC), so the indirect object cannot be
    inferred (Wang et al. 2022)."""
    rng, other = random.Random(seed), _counterpart_rng(seed)
    items = []
    for _ in range(n):
        io, s = rng.sample(_NAMES, 2)
        a, b = (io, s) if rng.random() < 0.5 else (s, io)
        t = rng.choice(_IOI_TEMPLATES)
        place, obj = rng.choice(_PLACES), rng.choice(_OBJECTS)
        prompt = t.format(a=a, b=b, s=s, place=place, obj=obj)
        c1, c2, c3 = other.sample([x for x in _NAMES if x not in (io, s)], 3)
        items.append(TaskItem(prompt, io, s, t.format(a=c1, b=c2, s=c3, place=place, obj=obj)))
    return items


# --- subject-verb agreement -----------------------------------------------------------------
_NOUNS = [  # (singular, plural)
    ("key", "keys"), ("author", "authors"), ("dog", "dogs"), ("teacher", "teachers"), ("picture", "pictures"),
    ("car", "cars"), ("student", "students"), ("bottle", "bottles"), ("song", "songs"), ("window", "windows"),
    ("doctor", "doctors"), ("box", "boxes"), ("child", "children"), ("letter", "letters"), ("house", "houses"),
    ("painting", "paintings"), ("bridge", "bridges"), ("report", "reports"), ("player", "players"), ("road", "roads"),
]
_AGREEMENT_TEMPLATES = [
    "The {subj} near the {attr}",
    "The {subj} behind the {attr}",
    "The {subj} of the {attr}",
    "The {subj} next to the {attr}",
    "The {subj} that the {attr} liked",
]
_VERBS = [("is", "are"), ("was", "were"), ("has", "have")]


def agreement_items(n: int, seed: int, counterpart: str = "attractor") -> list[TaskItem]:
    """Corrupted counterpart: the attractor's number flipped (it then agrees with the subject, and the answer stays),
    or with counterpart="subject" the subject's (it then agrees with the attractor, and the answer becomes the
    distractor: Finlayson et al. 2021's intervention, so patching a component tells whether it carries the subject's
    number). The items are the same either way."""
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        (subj1, subjn), (attr1, attrn) = rng.sample(_NOUNS, 2)
        plural = rng.random() < 0.5
        one, many = rng.choice(_VERBS)
        subj, attr = (subjn, attr1) if plural else (subj1, attrn)  # the attractor has the other number
        template = rng.choice(_AGREEMENT_TEMPLATES)
        prompt = template.format(subj=subj, attr=attr)
        if counterpart == "subject":
            flipped = template.format(subj=subj1 if plural else subjn, attr=attr)
        else:
            flipped = template.format(subj=subj, attr=attrn if plural else attr1)
        items.append(TaskItem(prompt, many if plural else one, one if plural else many, flipped))
    return items


def agreement_subject_items(n: int, seed: int) -> list[TaskItem]:
    """The agreement items, each with the subject's number flipped as its counterpart."""
    return agreement_items(n, seed, counterpart="subject")


TASKS = {"ioi": ioi_items, "agreement": agreement_items, "agreement-subject": agreement_subject_items}
