"""Rewards by name: the registry of built-in rewards, and `load` for names or dotted import paths."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from rewards.budget_fidelity import BudgetFidelityReward
from rewards.composite import CompositeReward
from rewards.correctness import CorrectnessReward
from rewards.format import format_reward

# Classes are built with the recipe's parameters; plain functions take none.
REGISTRY: dict[str, Callable[..., Any]] = {
    "correctness_reward": CorrectnessReward,
    "budget_fidelity_reward": BudgetFidelityReward,
    "format_reward": format_reward,
    "composite_reward": CompositeReward,
}


def resolve(name_or_path: str | Callable[..., Any]) -> Any:
    """The reward class or function behind a registered name or dotted import path (callables pass through)."""
    if not isinstance(name_or_path, str):
        return name_or_path
    if name_or_path in REGISTRY:
        return REGISTRY[name_or_path]
    return _import(name_or_path)


def _import(path: str) -> Any:
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise ValueError(
            f"Unknown reward {path!r}: not a registered name ({', '.join(sorted(REGISTRY))}) "
            "and not a dotted import path such as 'my_pkg.my_module.my_reward'."
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # not found, or the module itself raised while importing: the user's code either way
        raise ValueError(
            f"Cannot import module {module_name!r} for reward {path!r}: {type(error).__name__}: {error}"
        ) from error
    if not hasattr(module, attribute):
        raise ValueError(f"Module {module_name!r} has no attribute {attribute!r} (reward {path!r}).")
    return getattr(module, attribute)


def accepts(factory: Callable[..., Any], parameter: str) -> bool:
    """Whether a reward class (or factory) takes `parameter` in its constructor."""
    if not inspect.isclass(factory):
        return False
    return parameter in inspect.signature(factory).parameters


def load(name_or_path: str | Callable[..., Any], **kwargs) -> Callable[..., Any]:
    """A reward callable from a registered name, a dotted import path, or a callable.

    Classes are instantiated with `kwargs`; a function or an already built callable takes no parameters.

    Example:
        ```python
        >>> import rewards
        >>> reward = rewards.load("composite_reward", tokenizer="path/to/student", format_weight=0.1)
        >>> mine = rewards.load("my_pkg.my_module.my_reward")
        ```
    """
    target = resolve(name_or_path)
    if inspect.isclass(target):
        try:
            inspect.signature(target).bind(**kwargs)
        except TypeError as error:
            raise ValueError(f"Bad parameters {sorted(kwargs)} for reward {name_or_path!r}: {error}") from error
        return target(**kwargs)
    if not callable(target):
        raise ValueError(f"Reward {name_or_path!r} is not callable (got {type(target).__name__}).")
    if kwargs:
        raise ValueError(
            f"Reward {name_or_path!r} is a function and takes no parameters, got {sorted(kwargs)}; "
            "write it as a class with __init__ and __call__ to parameterise it."
        )
    return target
