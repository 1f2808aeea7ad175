"""Run every `python driver.py ...` command of the README and docs/ as written. Not a test: it takes
minutes (each training command's dry run times real steps at its real size).

    python -m tools.check_docs                 # every command; exit status 1 if any fails
    python -m tools.check_docs --list          # only print the commands as they will be run

Training commands get `--dry_run` (which resolves the settings, reads the data, builds the networks
and times a few steps, writing nothing). The other modes have no dry run, so they run for real on a
tiny trained run of the command's kind (conditional or not) in a scratch folder. Placeholders
(DATA, OLD_RUN, slice.png, the OASIS paths, ...) become small made-up data: phantom slices in the
COMP3710 layout, one NIfTI volume, a demographics table. `[...]` optional parts are left out and
`a|b` takes its first choice. An explorer command (`--mode explore`) passes when its page answers
on 127.0.0.1 (on a free port), and is then stopped with SIGTERM. Commands that need two machines
(`TF_CONFIG`) are skipped: that example is what tests/test_cluster.py runs. Run it from the
repository root.
"""

import argparse
import pathlib
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
from PIL import Image

import phantom

ROOT = pathlib.Path(__file__).resolve().parent.parent

TINY = ["--resolution=16", "--channel_base=256", "--channel_max=16", "--z_dim=8", "--w_dim=8",
        "--batch_size=4", "--tick_kimg=0.008", "--kimg=0.016"]
SUBJECTS = {"train": ["0037", "0061", "0096", "0384"], "validate": ["0198"]}
AGES = {"0037": 20, "0061": 87, "0096": 47, "0384": 55, "0198": 68}


def save_png(path, image):
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def doc_commands(paths):
    """(file, command) for every `python driver.py` line of the fenced bash blocks, continuation
    lines joined, comments and shell prefixes (`pip ... &&`, `timeout ...`) removed."""
    found = []
    for path in paths:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
            for line in block.replace("\\\n", " ").split("\n"):
                if "python driver.py" not in line:
                    continue
                line = re.sub(r"\s+#.*$", "", line)
                found.append((path.relative_to(ROOT), line[line.index("python driver.py"):]
                              if "TF_CONFIG" not in line else line))
    return found


def first_choices(command):
    """Leave out `[...]` optional parts and take the first of `a|b` choices."""
    command = re.sub(r"\s*\[[^\]]*\]", "", command)
    return " ".join(word.split("|")[0] if "|" in word and not word.startswith("'") else word
                    for word in command.split())


def make_data(scratch):
    """The made-up data the placeholders point at; returns the substitution table."""
    slices = phantom.synthetic_slices(24, 64, seed=0)
    data = scratch / "keras_png_slices_data"
    for split, subjects in SUBJECTS.items():
        for i, subject in enumerate(subjects):
            for z in range(4):
                image = slices[(4 * i + z) % len(slices)]
                save_png(str(data / f"keras_png_slices_{split}" / f"case_{subject}_slice_{z}.nii.png"), image)
    volumes = scratch / "oasis_volumes"
    volumes.mkdir()
    import nibabel as nib
    volume = np.stack(list(slices[:12]), axis=-1).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(volumes / "OAS1_0001_MR1.nii.gz"))
    table = scratch / "oasis1_demographics.csv"
    table.write_text("ID,M/F,Age,CDR\n" + "".join(
        f"OAS1_{s}_MR1,{'FM'[i % 2]},{AGES[s]},{0.5 * (i % 2)}\n" for i, s in enumerate(AGES)))
    targets = scratch / "folder"
    for i in range(2):
        save_png(str(targets / f"target{i}.png"), slices[i])
    save_png(str(scratch / "slice.png"), slices[5])
    return {"~/data/keras_png_slices_data": data, "../shared/data/oasis1_fullhead": data, "NEW_DATA": data,
            "DATA": data, "...": data, "~/data/oasis_volumes": volumes, "oasis1_demographics.csv": table,
            "slice.png": scratch / "slice.png", "folder/": targets,
            "L": "logistic", "G": "0.2048"}


def substitute(command, table, runs):
    words = []
    for word in shlex.split(command):
        flag, eq, value = word.partition("=")
        value = value if eq else flag
        for name, path in {**table, **runs}.items():
            if value == name:
                value = str(path)
        words.append(f"{flag}={value}" if eq else value)
    return words


def flag_value(words, name, default=""):
    """The value of `--name` in `words`, written `--name value` or `--name=value`."""
    for i, word in enumerate(words):
        if word == name and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(name + "="):
            return word[len(name) + 1:]
    return default


def driver(args, cwd):
    """`python driver.py ARGS` in `cwd`, as a user runs it: (exit status, seconds, output)."""
    start = time.time()
    result = subprocess.run([sys.executable, str(ROOT / "driver.py")] + args, cwd=cwd,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    return result.returncode, time.time() - start, result.stdout + result.stderr


def serve_and_stop(args, cwd, timeout=120):
    """`python driver.py ARGS --port FREE` until its page answers, then SIGTERM: (exit status, seconds,
    output); status 1 when the page never answered."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.time()
    process = subprocess.Popen([sys.executable, str(ROOT / "driver.py")] + args + [f"--port={port}"], cwd=cwd,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    answered = False
    while not answered and process.poll() is None and time.time() - start < timeout:
        try:
            answered = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200
        except OSError:
            time.sleep(0.2)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    return (process.returncode if answered else 1), time.time() - start, output


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args()
    paths = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    commands = doc_commands(paths)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="check_docs-"))
    table = make_data(scratch)
    plain, conditional = scratch / "plain", scratch / "conditional"
    runs = {"OLD_RUN": plain, "RUN_DIR": plain, "NEW_RUN": scratch / "new_run"}
    if not args.list:
        for folder, extra in ((plain, []), (conditional, ["--condition=slice,age,sex", f"--labels={table['oasis1_demographics.csv']}"])):
            status, _, output = driver([f"--output_dir={folder}", f"--data_dir={table['DATA']}"] + TINY + extra,
                                       scratch)
            if status:
                sys.exit(f"could not train the tiny {folder.name} run:\n{output[-2000:]}")
        steps = sorted(int(p.name[5:-6]) for p in (plain / "checkpoints").glob("ckpt-*.index"))
        runs["1250"] = str(steps[-1])                      # `--checkpoint 1250`: a step this run has
    failed = 0
    with open(scratch / "check_docs.log", "w") as log:
        for source, command in commands:
            if "TF_CONFIG" in command:
                print(f"skip  {source}: a two-machine command (tests/test_cluster.py runs it)")
                continue
            words = substitute(first_choices(command), table, runs)
            mode = flag_value(words, "--mode", "train")
            if mode != "train":                            # a conditional run where labels are requested
                cwd = conditional if "=" in flag_value(words, "--condition") else plain
            elif flag_value(words, "--load"):
                cwd = plain
            else:
                cwd = scratch / "new"                      # a new run's folder holds no run yet
                cwd.mkdir(exist_ok=True)
            if mode == "train":
                words.append("--dry_run")
                if flag_value(words, "--precision") == "float16":   # emulated on a CPU: hours at full size
                    words += ["--resolution=16", "--channel_base=256", "--channel_max=16"]
            if args.list:
                print(f"{source}: {' '.join(words)}  (in {cwd.name})")
                continue
            status, seconds, output = (serve_and_stop if mode == "explore" else driver)(words[2:], cwd)
            log.write(" ".join(words) + "\n" + output + "\n")
            failed += status != 0
            print(f"{'ok  ' if status == 0 else 'FAIL'}  {seconds:5.1f} s  {source}: {command}")
            if status:
                print("      " + "\n      ".join(output.strip().splitlines()[-3:]))
    print(f"{len(commands)} commands, {failed} failed; full output in {scratch / 'check_docs.log'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
