"""How an option's default reads in --help when its value does not say it (torch-free; any layer may use it).

Help texts never state a default themselves: the commands' HelpFormatter writes exactly one per option,
from the option's value or from the text set here.
"""
from __future__ import annotations

import argparse


def default_text(action: argparse.Action, text: str) -> argparse.Action:
    """Show `text` as the option's default, for a default its value does not say (None meaning "derived
    from other options"): `default_text(p.add_argument("--seeds"), "the preset's")`."""
    action.default_text = text  # type: ignore[attr-defined]
    return action
