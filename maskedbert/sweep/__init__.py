"""Studies as sets of cells that run anywhere: inline, local worker processes (pinned to GPUs), SLURM.

A command describes its study as `Cell`s (stable id, JSON spec, the cells it needs) plus a runner
("module:function", called as runner(spec, cell_dir, progress=...) -> JSON result) and a reporter
("module:function", called as reporter(study) on the finished cells). `prepare_study` records it in
<dir>/sweep.json (refusing a directory whose study has other settings), `launch` runs or submits
the cells that are not done, `maskedbert status DIR` / `maskedbert report DIR` read it back.
The engine imports no experiment: runners and reporters are named, and imported where they run. The
commands that launch studies (stability/command.py, srnet/command.py; not imported here) sit above the
experiments they launch: cli -> sweep -> experiments.
"""
from .launchers import (LaunchOptions, LaunchOutcome, add_launcher_arguments, check_launcher, launch,
                        launch_options_from_args)
from .study import MAX_FAILURES, Cell, CellState, Study, execute_cell, load_study, prepare_study

__all__ = ["Cell", "CellState", "Study", "LaunchOptions", "LaunchOutcome", "MAX_FAILURES", "add_launcher_arguments",
           "check_launcher", "execute_cell", "launch", "launch_options_from_args", "load_study", "prepare_study"]
