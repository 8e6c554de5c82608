"""Recipes and run-level settings.

A recipe is one flat YAML file per stage, parsed by TRL's `TrlParser` into the stage's dataclasses; command-line flags
override it. On top of TRL's format (`env:` sets environment variables), a recipe may say

- `include: run.yaml`: the run's shared settings (a path relative to the recipe). Its keys reach every stage that
  declares them and are ignored by the others, so a run-level setting (the budget grid, the answer allowance, the
  output root, the seed) is written once per run. The recipe's own keys win over the included ones, and must all be
  keys of the stage: an unknown one is a typo and an error.
- `${output_root}` in any string value (also in command-line flags): the run's output folder, from `output_root` in
  the recipe or its include, or from `--output_root` on the command line. `cotx-rl pipeline --output_root other/`
  moves a whole run.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotx_rl.budget import BudgetSettingError, check_budget_grid
from cotx_rl.io import StageInputError

OUTPUT_ROOT = "output_root"
PLACEHOLDER = "${output_root}"
# Keys of the run's shared settings that are not a stage's own: they never make an included key an error.
RUN_LEVEL_KEYS = (OUTPUT_ROOT, "budget_grid", "answer_tokens", "seed")
_RECIPE_ONLY_KEYS = ("include", "env", OUTPUT_ROOT)


@dataclass
class RunArguments:
    """Run-level settings shared by the stages that use them (compress, grpo, eval, ...): write them once, in the
    recipe folder's `run.yaml`."""

    budget_grid: list[int] = field(
        default_factory=lambda: [24, 48, 72, 96],
        metadata={"help": "Budgets in thinking tokens, positive and increasing; the same for every stage of a run."},
    )
    answer_tokens: int = field(
        default=16,
        metadata={
            "help": "Tokens allowed after the thought (closing tag, answer, end of sequence): GRPO's completions must "
            "have room for the largest budget plus this, and a thought closed by force gets this many more."
        },
    )

    def __post_init__(self):
        try:
            self.budget_grid = check_budget_grid(self.budget_grid)
        except BudgetSettingError as error:
            raise StageInputError(str(error)) from error
        if isinstance(self.answer_tokens, bool) or not isinstance(self.answer_tokens, int) or self.answer_tokens < 1:
            raise StageInputError(f"answer_tokens must be a positive integer, got {self.answer_tokens!r}.")


def _unique_key_loader():
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML would keep the last value silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            first_line = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden here
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in first_line
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} is given twice (first on line {first_line[key]})",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def read_yaml(path: str | os.PathLike, what: str = "Recipe") -> dict:
    """A YAML mapping from `path`, or a `StageInputError` naming the file (and the line of a syntax error)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise StageInputError(
            f"{what} {str(path)!r} does not exist." if not path.exists() else f"{what} {str(path)!r} is not a file."
        )
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_key_loader())  # a SafeLoader
    except UnicodeDecodeError as error:
        raise StageInputError(f"{what} {str(path)!r} is not UTF-8 text: {error}") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise StageInputError(f"{what} {str(path)!r}{where} is not valid YAML: {problem}.") from error
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise StageInputError(
            f"{what} {str(path)!r} must hold a mapping of keys to values, got {type(config).__name__}."
        )
    return config


def load_recipe(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> tuple[dict, dict]:
    """`(own keys, included keys)` of a recipe, includes resolved (an include may include another)."""
    path = Path(path)
    if path.resolve() in _seen:
        raise StageInputError(f"Recipe {str(path)!r} includes itself (through {[str(p) for p in _seen]}).")
    own = read_yaml(path)
    included: dict = {}
    target = own.pop("include", None)
    if target is not None:
        if not isinstance(target, str):
            raise StageInputError(f"Recipe {str(path)!r}: include must be a file name, got {target!r}.")
        include_path = path.parent / target
        if not include_path.is_file():
            raise StageInputError(f"Recipe {str(path)!r} includes {target!r}, which does not exist ({include_path}).")
        inner_own, inner_included = load_recipe(include_path, (*_seen, path.resolve()))
        included = _merge(inner_included, inner_own)
    return own, included


def _merge(base: dict, top: dict) -> dict:
    merged = {**base, **top}
    if isinstance(base.get("env"), dict) and isinstance(top.get("env"), dict):
        merged["env"] = {**base["env"], **top["env"]}
    return merged


def substitute(value: Any, output_root: str | None, where: str) -> Any:
    """`value` with `${output_root}` replaced in every string it holds."""
    if isinstance(value, str):
        if PLACEHOLDER not in value:
            return value
        if output_root is None:
            raise StageInputError(
                f"{where} uses {PLACEHOLDER} but no output_root is set (in the recipe, its include, or --output_root)."
            )
        return value.replace(PLACEHOLDER, str(output_root))
    if isinstance(value, list):
        return [substitute(item, output_root, where) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, output_root, where) for key, item in value.items()}
    return value


def _pop_flag(argv: list[str], flag: str) -> str | None:
    """Remove `flag VALUE` (or `flag=VALUE`) from argv; the value of its last occurrence."""
    value = None
    index = 0
    while index < len(argv):
        if argv[index] == flag:
            if index + 1 >= len(argv):
                raise StageInputError(f"{flag} needs a value.")
            value = argv[index + 1]
            del argv[index : index + 2]
        elif argv[index].startswith(flag + "="):
            value = argv[index].split("=", 1)[1]
            del argv[index]
        else:
            index += 1
    return value


def declared_keys(parser) -> set[str]:
    return {f.name for cls in parser.dataclass_types for f in dataclasses.fields(cls)}


def _unknown_key_message(key: str, declared: set[str], path: Path) -> str:
    close = difflib.get_close_matches(key, sorted(declared), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"Recipe {str(path)!r}: unknown key {key!r}{hint}."


def parse_stage_args(parser, argv: list[str] | None = None, precheck=None) -> tuple:
    """Parse a stage's recipe and flags into its dataclasses: includes, `${output_root}`, `env:`, then flags."""
    argv = list(argv or [])
    config_path = _pop_flag(argv, "--config")
    declared = declared_keys(parser)
    cli_root = None if OUTPUT_ROOT in declared else _pop_flag(argv, "--" + OUTPUT_ROOT)
    config: dict = {}
    if config_path is not None:
        own, included = load_recipe(config_path)
        unknown = [key for key in own if key not in declared and key not in _RECIPE_ONLY_KEYS]
        if unknown:
            raise StageInputError(_unknown_key_message(unknown[0], declared, Path(config_path)))
        merged = _merge(included, own)
        env = merged.pop("env", None) or {}
        if not isinstance(env, dict):
            raise StageInputError(f"Recipe {config_path!r}: env must map variable names to values.")
        for key, value in env.items():
            os.environ[str(key)] = str(value)
        root = merged.get(OUTPUT_ROOT)
        if cli_root is None and OUTPUT_ROOT in declared:
            cli_root = _peek_flag(argv, "--" + OUTPUT_ROOT)
        root = cli_root if cli_root is not None else root
        config = {
            key: substitute(value, root, f"Recipe {config_path!r} key {key!r}")
            for key, value in merged.items()
            if key in declared and (key in own or key in included)
        }
    else:
        root = cli_root
    argv = [substitute(item, root, "Command-line flag") for item in argv]
    parser.set_defaults_with_config(**config)
    if precheck is not None:
        precheck(parser.parse_known_args(args=argv)[0])
    return parser.parse_args_into_dataclasses(args=argv)


def _peek_flag(argv: list[str], flag: str) -> str | None:
    value = None
    for index, item in enumerate(argv):
        if item == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif item.startswith(flag + "="):
            value = item.split("=", 1)[1]
    return value


def make_parser(*dataclass_types, precheck: Callable[[argparse.Namespace], None] | None = None):
    """TRL's `TrlParser` over a stage's dataclasses, parsing recipes as this module describes.

    `precheck`, when given, sees the parsed values before the dataclasses are built: their `__post_init__` runs TRL's
    own checks, and some of those crash on a value they do not expect instead of naming it.
    """
    from trl import TrlParser

    class StageParser(TrlParser):
        def parse_args_and_config(self, args=None, return_remaining_strings=False, fail_with_unknown_args=True, **_):
            return parse_stage_args(self, args, precheck)

    return StageParser(dataclass_types)
