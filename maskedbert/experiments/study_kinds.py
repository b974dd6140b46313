"""The studies maskedbert.sweep can run, by the name sweep.json records: each name's runner (one cell)
and reporter (the tables from the finished cells). A name not listed here is refused with a UsageError;
nothing named in a sweep.json is ever imported. The studies' cells modules import no torch at module level
(their runs import it), so commands that only parse flags stay free of torch."""
from __future__ import annotations

from types import ModuleType
from typing import Callable

from maskedbert.errors import UsageError
from maskedbert.experiments.srnet import cells as srnet_cells
from maskedbert.experiments.stability import cells as stability_cells
from maskedbert.sweep import StudyKinds

__all__ = ["KINDS", "NAMES", "runner", "reporter"]


# name -> the module holding its run_cell(spec, cell_dir, progress=...) and report_cells(study)
_CELLS_MODULES: dict[str, ModuleType] = {"stability": stability_cells, "srnet": srnet_cells}
NAMES = tuple(_CELLS_MODULES)


def _cells_module(name: str, role: str) -> ModuleType:
    if name not in _CELLS_MODULES:
        raise UsageError(f"sweep.json: {role} {name!r} is not a study maskedbert knows; expected one of "
                         f"{', '.join(NAMES)} (a study recorded by another maskedbert version: rerun its command "
                         f"with the same --out to record the names)")
    return _CELLS_MODULES[name]


def runner(name: str) -> Callable:
    return _cells_module(name, "runner").run_cell


def reporter(name: str) -> Callable:
    return _cells_module(name, "reporter").report_cells


KINDS = StudyKinds(runner=runner, reporter=reporter, worker_module="maskedbert.experiments.worker")
