"""Every command's --help: one generated default per option, and descriptions that end as sentences."""
import contextlib
import io
import re

import pytest

from maskedbert.cli import COMMANDS, main


def _help(command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code in (0, None)
    return out.getvalue()


def _option_blocks(text: str) -> list[str]:
    """Each option's entry: its line starting with '  -' plus the more-indented lines after it."""
    blocks, current = [], None
    for line in text.splitlines():
        if re.match(r"^  {1,4}-", line):
            current = [line]
            blocks.append(current)
        elif current is not None and re.match(r"^ {6,}\S", line):
            current.append(line)
        else:
            current = None
    return [" ".join(part.strip() for part in block) for block in blocks]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_option_states_one_default(command):
    text = _help(command)
    blocks = _option_blocks(text)
    assert blocks, text
    for block in blocks:
        assert len(re.findall(r"default:", block)) <= 1, block
        assert not re.search(r"\(default[ )]|\(default\)|default \d", block), f"hand-written default: {block}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_description_is_complete(command):
    text = _help(command)
    description = text.split("\n\n")[1].strip()
    assert description.rstrip().endswith((".", ")", ":")) or "\n" in description, description
    assert not re.search(r"\b(with|from|of|the|a|and|how|many|to)$", description), description
