"""The module structure: no import cycle, generation and evaluation never load the training loop,
every module says what lives in it and what does not, no tool (tools/*.py) defines a function the
library has or touches sys.path, and --help shows every flag once, grouped by purpose, with the
chosen preset's defaults taken from the Config fields themselves."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = sorted(name[:-3] for name in os.listdir(ROOT) if name.endswith(".py"))


def imports_of(module):
    """The project modules `module` imports anywhere in its file (top level or inside functions)."""
    tree = ast.parse(open(os.path.join(ROOT, module + ".py")).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found & set(MODULES)


GRAPH = {module: imports_of(module) for module in MODULES}


def reachable(module):
    seen, todo = set(), [module]
    while todo:
        for child in GRAPH[todo.pop()] - seen:
            seen.add(child)
            todo.append(child)
    return seen


def test_the_imports_have_no_cycle():
    cycles = [m for m in MODULES if m in reachable(m)]
    assert not cycles, {m: sorted(GRAPH[m]) for m in cycles}
    assert "training" in GRAPH["driver"] and "evaluation" in GRAPH["training"]   # the graph is really read


@pytest.mark.parametrize("module", ["sampling", "evaluation", "projection", "encoder", "inference", "explorer",
                                    "runs", "checkpointing", "data"])
def test_using_a_trained_model_never_loads_the_training_loop(module):
    assert "training" not in reachable(module)


def test_the_run_folder_knows_nothing_of_the_model():
    for module in ("runs", "runlock", "checkpointing", "resume"):
        assert "gan" not in reachable(module) and "generator" not in reachable(module), module


# ---------------------------------------------------------------------------------------------
# One way to open a trained model
# ---------------------------------------------------------------------------------------------

# Who calls what builds or restores networks; anything else that wants a trained generator calls
# inference.open_generator.
RESTORERS = {
    "load_model": {"inference", "encoder"},               # a .keras export; the run's projection encoder
    "read_variables": {"inference", "resume"},            # resume: --init_from, the start of a training
    "load_checkpoint": {"checkpointing"},
    "Checkpointer": {"training"},                         # a training's own checkpoints, every variable
    "make_generator": {"gan", "inference"},
    "build_gan": {"training", "tools/bench"},             # the training model; bench times its step
}


def calls_in(source):
    """Names called in `source`: `f(...)` and `x.f(...)`."""
    called = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            called.add(node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None))
    return called


def test_only_the_inference_module_opens_a_trained_model():
    assert calls_in("import keras\nm = keras.models.load_model(p)\ng = make_generator(c)\n") >= {"load_model", "make_generator"}
    sources = {module: os.path.join(ROOT, module + ".py") for module in MODULES}
    sources.update({f"tools/{tool[:-3]}": os.path.join(ROOT, "tools", tool) for tool in TOOLS})
    found = {name: set() for name in RESTORERS}
    for owner, path in sources.items():
        for name in calls_in(open(path).read()) & set(RESTORERS):
            found[name].add(owner)
    assert found == RESTORERS
    users = {owner for owner, path in sources.items() if "open_generator" in calls_in(open(path).read())}
    assert {"driver", "tools/real_eval", "tools/condition_eval", "tools/projection_eval", "tools/latent_probe"} <= users


@pytest.mark.parametrize("module", MODULES)
def test_every_module_says_what_lives_there_and_what_does_not(module):
    doc = ast.get_docstring(ast.parse(open(os.path.join(ROOT, module + ".py")).read())) or ""
    assert "Lives here" in doc and "Not here" in doc, module


# ---------------------------------------------------------------------------------------------
# The tools (tools/*.py) are thin scripts: every measure they take is the library's
# ---------------------------------------------------------------------------------------------

TOOLS = sorted(name for name in os.listdir(os.path.join(ROOT, "tools")) if name.endswith(".py"))
ENTRY_POINT = "main"                        # every script's and driver.py's own: not a measure


def functions_defined(source):
    """Names of the functions `source` defines, at any depth."""
    return {node.name for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def library_functions():
    """{name: module} of every function a library module defines at its top level."""
    found = {}
    for module in MODULES:
        tree = ast.parse(open(os.path.join(ROOT, module + ".py")).read())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.setdefault(node.name, module)
    return found


def redefined(source, library):
    """The functions `source` defines that a library module defines too (but the entry point)."""
    return sorted((functions_defined(source) & set(library)) - {ENTRY_POINT})


def touches_sys_path(source):
    """Whether `source` reads or changes sys.path (`sys.path...` or `from sys import path`)."""
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                and node.value.id == "sys"):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names):
            return True
    return False


def test_the_tool_rules_catch_a_redefined_measure_and_a_path_change():
    library = {"fit_ridge": "levels", "psnr": "metrics", ENTRY_POINT: "driver"}
    source = ("import sys\nsys.path.insert(0, '..')\n\ndef fit_ridge(x):\n    def psnr(a):\n        return a\n"
              "    return x\n\ndef plot(x):\n    return x\n\ndef main():\n    pass\n")
    assert redefined(source, library) == ["fit_ridge", "psnr"]               # nested too; main is no measure
    assert touches_sys_path(source) and touches_sys_path("from sys import path\npath.append('.')\n")
    assert not touches_sys_path("import os\nimport sys\nsys.exit(os.path.join('a', 'b'))\n")
    assert library_functions()["fit_ridge"] == "levels" and library_functions()["slice_number"] == "labels"
    assert library_functions()["psnr"] == "metrics" and library_functions()["ssim_terms"] == "metrics"


@pytest.mark.parametrize("tool", TOOLS)
def test_no_tool_redefines_a_library_function_or_touches_sys_path(tool):
    source = open(os.path.join(ROOT, "tools", tool)).read()
    library = library_functions()
    assert not redefined(source, library), {name: library[name] for name in redefined(source, library)}
    assert not touches_sys_path(source), f"tools/{tool} changes sys.path: run it as python -m tools.{tool[:-3]}"


def test_help_lists_every_flag_once_by_purpose_with_the_presets_defaults():
    import config
    import driver
    defined = {flag.name for flag in driver.FLAGS.flags_by_module_dict()["driver"]}
    grouped = [name for names in driver.HELP_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(defined) and len(defined) > 60
    for field in config.TUNABLES:                                  # the help text is the field's own
        assert driver.FLAGS[field.name].help.endswith(field.metadata["help"]), field.name
    quick, paper = driver.help_text("quick"), driver.help_text("paper")
    assert "(default: 4096)" in section(quick, "--channel_base") and "(default: 32768)" in section(paper, "--channel_base")
    assert "(default: 10.0)" in section(paper, "--r1_gamma") and "(default: strided)" in section(paper, "--d_downsample")
    reference = driver.help_text("reference")
    assert f"(default: {config.PRESETS['reference'].resolved_r1_gamma:g} (the heuristic))" in section(reference, "--r1_gamma")
    titles = [line for line in quick.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert titles[-len(driver.HELP_GROUPS):] == [f"{group}:" for group in driver.HELP_GROUPS]
    assert driver._preset_in(["driver.py", "--preset", "paper", "--help"]) == "paper"
    assert driver._preset_in(["driver.py", "--preset=nonsense"]) == "quick"


def section(text, flag):
    """The --help entry of one flag (its wrapped lines joined)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {flag}:") or line.startswith(f"  --[no]{flag[2:]}:"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("      ")), len(lines))
    return " ".join(line.strip() for line in lines[start:end])
