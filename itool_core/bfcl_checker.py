"""Access to bfcl-eval's own AST checker, without importing every model vendor's SDK.

Importing the checker pulls ``bfcl_eval.constants.model_config``, which imports every model vendor's SDK;
:func:`install_model_config_stub` puts a stand-in module there first.  The AST checker only reads
``MODEL_CONFIG_MAPPING[name].underscore_to_dot`` (to rename dotted functions for OpenAI-style FC models): the
stand-in answers ``False`` for every name, which is right for prompt-mode models.

This sits below ``data`` and ``eval`` because both hand examples to the same checker: the data build checks
every training target with it (``data.augment.check``), the evaluation scores model outputs with it
(``eval.bfcl``).  The verdicts are always bfcl-eval's; nothing here re-implements them.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["CHECKER_MODEL_NAME", "install_model_config_stub", "ast_checker"]

#: Name passed to bfcl's checker; with the stand-in config it only matters as a label.
CHECKER_MODEL_NAME = "itool-prompt"


class _StubModelConfig:
    underscore_to_dot = False
    is_fc_model = False


class _StubConfigMapping(dict):
    """``MODEL_CONFIG_MAPPING`` stand-in: every model name maps to a prompt-mode config."""

    def __missing__(self, key: str) -> _StubModelConfig:
        return _StubModelConfig()


def install_model_config_stub() -> None:
    """Make ``bfcl_eval.constants.model_config`` importable without importing any vendor SDK.

    If the real module is already imported (a full bfcl-eval install), its mapping is wrapped instead so that
    model names it does not know (ours) still answer ``underscore_to_dot=False`` rather than ``KeyError``.
    """
    name = "bfcl_eval.constants.model_config"
    mod: Any = sys.modules.get(name)  # a module whose attributes are set here (ModuleType declares none)
    if mod is None:
        mod = types.ModuleType(name)
        mod.__doc__ = "itool stand-in: the AST checker only reads MODEL_CONFIG_MAPPING[...].underscore_to_dot"
        mod.MODEL_CONFIG_MAPPING = _StubConfigMapping()
        sys.modules[name] = mod
    elif not isinstance(getattr(mod, "MODEL_CONFIG_MAPPING", None), _StubConfigMapping):
        mod.MODEL_CONFIG_MAPPING = _StubConfigMapping(getattr(mod, "MODEL_CONFIG_MAPPING", {}))
    checker: Any = sys.modules.get("bfcl_eval.eval_checker.ast_eval.ast_checker")
    if checker is not None:  # imported earlier (e.g. by a test): rebind its global to the safe mapping
        checker.MODEL_CONFIG_MAPPING = mod.MODEL_CONFIG_MAPPING


def ast_checker():
    """``(ast_checker function, Language enum)`` from the installed bfcl-eval."""
    install_model_config_stub()
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker as _checker

    return _checker, Language
