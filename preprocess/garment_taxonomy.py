"""The garment tag taxonomy: loading and validating the shipped or a user JSON file, and the per-category attribute filter.

File structure (see preprocess/garment_taxonomy.json):
- `templates`: default prompt templates with one `{}` each (optional);
- `attributes`: `{key: {"label", "templates"?, "tags": [{"name", "caption", "prompt"?, "count"?}, ...]}}` where
  `caption` is the text the tag adds to the description ("" adds nothing) and `prompt` the text put into the
  templates for zero-shot scoring (defaults to the caption, else the name);
- `categories`: `{upper_body | lower_body | dresses: [attribute keys in description order]}`.
A `comment` key is allowed anywhere; any other unknown key is an error (it is most likely a typo).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass

from ..errors import TryOnInputError
from .labels import CATEGORIES

BUILTIN_TAXONOMY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "garment_taxonomy.json")
DEFAULT_TEMPLATES = ("a photo of {}.",)
MAX_FILE_BYTES = 4 * 1024 * 1024

_TOP_KEYS = {"format", "version", "comment", "templates", "attributes", "categories"}
_ATTRIBUTE_KEYS = {"label", "templates", "tags", "comment"}
_TAG_KEYS = {"name", "caption", "prompt", "count", "comment"}


@dataclass(frozen=True)
class Tag:
    name: str  # shown in the scores
    caption: str  # added to the description ("" = nothing)
    prompt: str  # put into the templates for zero-shot scoring


@dataclass(frozen=True)
class Attribute:
    key: str
    label: str
    templates: tuple[str, ...]
    tags: tuple[Tag, ...]

    def prompts(self) -> list[list[str]]:
        """Per tag, the texts the classifier encodes (one per template)."""
        return [[template.replace("{}", tag.prompt) for template in self.templates] for tag in self.tags]


@dataclass(frozen=True)
class Taxonomy:
    source: str
    attributes: dict[str, Attribute]
    categories: dict[str, tuple[str, ...]]

    def for_category(self, category: str, input_name: str = "taxonomy") -> tuple[Attribute, ...]:
        """The attributes that make sense for `category`, in description order."""
        if category not in CATEGORIES:
            raise TryOnInputError(f"category: '{category}' is not one of {', '.join(CATEGORIES)}.")
        if category not in self.categories:
            raise TryOnInputError(
                f"{input_name}: {self.source} has no '{category}' category. Add it under \"categories\" or choose one of: {', '.join(self.categories)}."
            )
        return tuple(self.attributes[key] for key in self.categories[category])


class _Checker:
    """Collects the context of a validation error: the input name and the file."""

    def __init__(self, input_name: str, source: str):
        self.input_name = input_name
        self.source = source

    def fail(self, where: str, problem: str) -> TryOnInputError:
        return TryOnInputError(
            f"{self.input_name}: {self.source} is not a valid garment taxonomy: {where}: {problem}. "
            "Fix the file (compare with the pack's preprocess/garment_taxonomy.json)."
        )

    def mapping(self, value, where: str, allowed: set[str], required: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {type(value).__name__}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(where, f"unknown key(s) {', '.join(repr(k) for k in unknown)} (allowed: {', '.join(sorted(allowed))})")
        missing = [key for key in required if key not in value]
        if missing:
            raise self.fail(where, f"missing key(s) {', '.join(repr(k) for k in missing)}")
        return value

    def text(self, value, where: str, allow_empty: bool = False) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"expected a string, got {type(value).__name__}")
        value = " ".join(value.split())
        if not value and not allow_empty:
            raise self.fail(where, "must not be empty")
        return value

    def templates(self, value, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(where, "expected a non-empty list of strings")
        templates = tuple(self.text(item, f"{where}[{i}]") for i, item in enumerate(value))
        for i, template in enumerate(templates):
            if template.count("{}") != 1:
                raise self.fail(f"{where}[{i}]", f"'{template}' must contain '{{}}' exactly once (where the tag's prompt goes)")
        return templates


def parse_taxonomy(data, source: str, input_name: str = "taxonomy") -> Taxonomy:
    """A validated Taxonomy from decoded JSON; every problem is a TryOnInputError naming the input and the place."""
    check = _Checker(input_name, source)
    data = check.mapping(data, "top level", _TOP_KEYS, ("attributes", "categories"))
    default_templates = check.templates(data["templates"], "templates") if "templates" in data else DEFAULT_TEMPLATES

    raw_attributes = data["attributes"]
    if not isinstance(raw_attributes, dict) or not raw_attributes:
        raise check.fail("attributes", "expected an object defining at least one attribute")
    attributes = {}
    for key, raw in raw_attributes.items():
        where = f"attributes.{key}"
        raw = check.mapping(raw, where, _ATTRIBUTE_KEYS, ("tags",))
        label = check.text(raw["label"], f"{where}.label") if "label" in raw else key.replace("_", " ")
        templates = check.templates(raw["templates"], f"{where}.templates") if "templates" in raw else default_templates
        if not isinstance(raw["tags"], list) or not raw["tags"]:
            raise check.fail(f"{where}.tags", "expected a non-empty list of tags")
        tags, names = [], set()
        for i, raw_tag in enumerate(raw["tags"]):
            tag_where = f"{where}.tags[{i}]"
            raw_tag = check.mapping(raw_tag, tag_where, _TAG_KEYS, ("name", "caption"))
            name = check.text(raw_tag["name"], f"{tag_where}.name")
            if name in names:
                raise check.fail(tag_where, f"duplicate tag name '{name}'")
            names.add(name)
            caption = check.text(raw_tag["caption"], f"{tag_where}.caption", allow_empty=True)
            prompt = check.text(raw_tag["prompt"], f"{tag_where}.prompt") if "prompt" in raw_tag else (caption or name)
            if "count" in raw_tag and (not isinstance(raw_tag["count"], int) or isinstance(raw_tag["count"], bool) or raw_tag["count"] < 0):
                raise check.fail(f"{tag_where}.count", "expected a non-negative integer")
            tags.append(Tag(name, caption, prompt))
        attributes[key] = Attribute(key, label, templates, tuple(tags))

    raw_categories = check.mapping(data["categories"], "categories", set(CATEGORIES), ())
    if not raw_categories:
        raise check.fail("categories", f"must define at least one of {', '.join(CATEGORIES)}")
    categories = {}
    for category, keys in raw_categories.items():
        where = f"categories.{category}"
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise check.fail(where, "expected a non-empty list of attribute keys")
        unknown = [k for k in keys if k not in attributes]
        if unknown:
            raise check.fail(where, f"unknown attribute(s) {', '.join(repr(k) for k in unknown)} (defined: {', '.join(attributes)})")
        if len(set(keys)) != len(keys):
            raise check.fail(where, "an attribute is listed twice")
        categories[category] = tuple(keys)
    return Taxonomy(source, attributes, categories)


def load_taxonomy(path: str, input_name: str = "taxonomy", source: str | None = None) -> Taxonomy:
    """Reads and validates a taxonomy JSON file (cached until the file changes)."""
    source = source or os.path.basename(path)
    try:
        stat = os.stat(path)
    except OSError as error:
        raise TryOnInputError(f"{input_name}: cannot read {source} ({error.strerror}). Check that the file exists.") from error
    return _load_cached(path, stat.st_mtime_ns, stat.st_size, input_name, source)


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int, size: int, input_name: str, source: str) -> Taxonomy:
    if size > MAX_FILE_BYTES:
        raise TryOnInputError(f"{input_name}: {source} is {size} bytes; a taxonomy file is at most {MAX_FILE_BYTES} bytes.")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except UnicodeDecodeError as error:
        raise TryOnInputError(f"{input_name}: {source} is not UTF-8 text ({error.reason}). Save it as UTF-8 JSON.") from error
    except json.JSONDecodeError as error:
        raise TryOnInputError(f"{input_name}: {source} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}. Fix the file.") from error
    except OSError as error:
        raise TryOnInputError(f"{input_name}: cannot read {source} ({error.strerror}).") from error
    return parse_taxonomy(data, source, input_name)


def builtin_taxonomy() -> Taxonomy:
    """The taxonomy shipped with the pack."""
    return load_taxonomy(BUILTIN_TAXONOMY, "taxonomy", "the built-in taxonomy")
