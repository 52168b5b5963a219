"""Prompt sets for zero-shot CLIP classification (study A.3): parsing, checking, filling in.

`clip/prompt_sets` is a JSON object, name -> prompt set, in one of two forms:

    ["a chest X-ray showing {}", "{}"]              templates; every "{}" becomes the class's
                                                    readable name ("Lung_Opacity" -> "lung opacity")
    {"COVID": ["..."], "Normal": ["...", "..."]}    per class folder, its own prompts

A class with several prompts is an ensemble: their text embeddings are averaged.
Imports only the standard library, so a space file or the CLI can check sets cheaply.
"""
from __future__ import annotations

import json
import re

PromptSet = list[str] | dict[str, list[str]]


def readable(folder: str) -> str:
    """A class folder name as words: "Lung_Opacity" -> "lung opacity", "Viral Pneumonia" -> "viral pneumonia"."""
    return " ".join(re.split(r"[\s_\-]+", folder.strip())).lower()


def _is_prompt_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(p, str) and p.strip() for p in value)


def parse_prompt_sets(text: str) -> dict[str, PromptSet]:
    """The prompt sets in a `clip/prompt_sets` JSON string; a malformed one is a ValueError saying where."""
    try:
        sets = json.loads(text)
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"clip/prompt_sets is not valid JSON ({e}): {str(text)[:120]!r}; expected an object "
                         "mapping each set name to a list of templates with '{}' or to an object of class "
                         "folder -> list of prompts.") from None
    if not isinstance(sets, dict) or not sets:
        raise ValueError(f"clip/prompt_sets must be a non-empty JSON object of set name -> prompt set, "
                         f"got {str(text)[:120]!r}.")
    for name, value in sets.items():
        if isinstance(value, list):
            if not _is_prompt_list(value) or not all("{}" in t for t in value):
                raise ValueError(f"Prompt set {name!r} in clip/prompt_sets is a list, so it must be a non-empty "
                                 f"list of templates that each contain '{{}}' for the class name; got {value!r}.")
        elif isinstance(value, dict):
            bad = [cls for cls, prompts in value.items() if not _is_prompt_list(prompts)]
            if not value or bad:
                raise ValueError(f"Prompt set {name!r} in clip/prompt_sets maps class folders to prompts, so "
                                 f"each class needs a non-empty list of non-empty strings; "
                                 f"{'it is empty' if not value else 'not so for ' + ', '.join(map(repr, bad))}.")
        else:
            raise ValueError(f"Prompt set {name!r} in clip/prompt_sets is a {type(value).__name__}; accepted: a "
                             "list of templates with '{}' or an object of class folder -> list of prompts.")
    return sets


def select_prompt_set(text: str, name: str) -> PromptSet:
    """Set `name` (clip/prompt_set) of the JSON `text` (clip/prompt_sets); an unknown name lists the known ones."""
    sets = parse_prompt_sets(text)
    if name not in sets:
        raise ValueError(f"clip/prompt_set={name!r} is not defined in clip/prompt_sets; "
                         f"known sets: {', '.join(sets)}.")
    return sets[name]


def class_prompts(prompt_set: PromptSet, classes: list[str], name: str = "") -> list[list[str]]:
    """The prompts of each class, in label order; a dict-style set must name exactly the data's classes."""
    if isinstance(prompt_set, list):
        return [[template.replace("{}", readable(cls)) for template in prompt_set] for cls in classes]
    missing = [c for c in classes if c not in prompt_set]
    unknown = [c for c in prompt_set if c not in classes]
    problems = ([f"no prompts for {', '.join(map(repr, missing))}"] if missing else []) + \
               ([f"prompts for {', '.join(map(repr, unknown))}, which the data lacks"] if unknown else [])
    if problems:
        raise ValueError(f"Prompt set {name!r} does not fit the data: it has {' and '.join(problems)}; its keys "
                         f"must be exactly the class folders {', '.join(map(repr, classes))}.")
    return [list(prompt_set[c]) for c in classes]
