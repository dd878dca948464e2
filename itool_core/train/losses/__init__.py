"""Preference losses of the iteration's update (§4.3, Eq. 10): one module per trl trainer family.

A loss is an object with

* ``name``;
* ``trainer_class()`` — the trl trainer subclass that trains on the search's pre-tokenised step-level rows
  (built on first use: importing a loss module does not import trl);
* ``trl_config(cfg, common)`` — its trl config from :class:`~itool_core.config.PreferenceConfig` and the
  arguments every trainer shares (``train.preference`` builds ``common``).

It is registered in :data:`itool_core.registry.LOSSES` with its default β and whether it uses a reference
model; ``train.preference`` looks it up by ``PreferenceConfig.loss``.  Adding a loss = a module here with such
an object, one ``LOSSES.register`` line, and a test.
"""

from __future__ import annotations

from typing import Any

from ...registry import LOSSES

__all__ = ["get"]


def get(name: str) -> Any:
    """The loss object registered under ``name``."""
    return LOSSES.load(name)
