"""Studies as sets of cells that run anywhere: inline, local worker processes (pinned to GPUs), SLURM.

A command describes its study as `Cell`s (stable id, JSON spec, the cells it needs) plus the names of a
runner (called as runner(spec, cell_dir, progress=...) -> JSON result) and a reporter (called as
reporter(study) on the finished cells). `prepare_study` records it in <dir>/sweep.json (refusing a
directory whose study has other settings), `launch` runs or submits the cells that are not done,
`maskedbert status DIR` / `maskedbert report DIR` read it back. The names mean what the caller's
`StudyKinds` says (maskedbert.experiments.study_kinds for maskedbert's studies): this package imports
no experiment and never imports a module named in sweep.json. Layering: cli -> experiments -> sweep.
"""
from .launchers import (LaunchOptions, LaunchOutcome, add_launcher_arguments, check_launcher, launch,
                        launch_options_from_args)
from .study import MAX_FAILURES, Cell, CellState, Study, StudyKinds, execute_cell, load_study, prepare_study

__all__ = ["Cell", "CellState", "Study", "StudyKinds", "LaunchOptions", "LaunchOutcome", "MAX_FAILURES",
           "add_launcher_arguments", "check_launcher", "execute_cell", "launch", "launch_options_from_args",
           "load_study", "prepare_study"]
