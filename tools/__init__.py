"""Scripts outside the program: benchmarks, the docs check and the real-data studies in docs/.

Run each from the repository root as a module, `python -m tools.real_eval ...`, so that it imports
the library as it stands (no path tricks). Lives here: the scripts' flags and their reports. Not
here: any measure they take (those are the library's: metrics.py, levels.py, evaluation.py, ...).
"""
