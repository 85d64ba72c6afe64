#!/usr/bin/env python3
"""Runs the blocks of a Markdown document that are marked for testing, in order, as written.

A marked block is a ```sh fenced block right after one of these comment lines:
  <!-- test: run -->                         runs; must exit 0
  <!-- test: run, expect "TEXT" -->          runs; must exit 0 and print TEXT
  <!-- test: background, ready "PATH" -->    starts (a server); the next block runs once PATH exists;
                                             stopped with SIGTERM when the document ends
Substitutions (and nothing else): each FROM=TO pair given with --replace, in the block's text.
Prints "  ok: ..." / "  FAIL: ..." lines like the shell tests; exits with the number of failures.
usage: run-doc-blocks.py DOCUMENT LOGDIR [--replace FROM=TO]...
"""
import os
import re
import signal
import subprocess
import sys
import time

MARK = re.compile(r'^<!-- test: (run|background)(?:, (expect|ready) "([^"]*)")? -->\s*$')


def blocks(path):
    lines = open(path).read().split("\n")
    i = 0
    while i < len(lines):
        m = MARK.match(lines[i])
        i += 1
        if not m:
            continue
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines) or not lines[i].startswith("```"):
            yield (m.group(1), m.group(2), m.group(3), None, i)
            continue
        start = i + 1
        end = start
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        yield (m.group(1), m.group(2), m.group(3), "\n".join(lines[start:end]), start)
        i = end + 1


def stop(process):
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main():
    document, logdir = sys.argv[1], sys.argv[2]
    replacements = []
    args = sys.argv[3:]
    while args:
        if args[0] == "--replace" and len(args) > 1 and "=" in args[1]:
            replacements.append(args[1].split("=", 1))
            args = args[2:]
        else:
            print(__doc__, file=sys.stderr)
            return 2
    os.makedirs(logdir, exist_ok=True)
    name = os.path.basename(document)
    failures = 0
    background = []
    ran = 0
    for kind, condition, argument, text, line in blocks(document):
        where = f"{name}:{line}"
        if text is None:
            print(f"  FAIL: {where}: a test mark without a ```sh block after it")
            failures += 1
            continue
        for old, new in replacements:
            text = text.replace(old, new)
            argument = argument.replace(old, new) if argument else argument
        log = os.path.join(logdir, f"{name}-{line}.log")
        first = text.strip().split("\n")[0][:70]
        ran += 1
        with open(log, "w") as out:
            process = subprocess.Popen(["bash", "-c", text], stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        if kind == "background":
            background.append(process)
            deadline = time.time() + 120
            while argument and not os.path.exists(argument) and time.time() < deadline and process.poll() is None:
                time.sleep(0.1)
            if argument and not os.path.exists(argument):
                print(f"  FAIL: {where}: `{first}` never made {argument}: {open(log).read()[-400:]}")
                failures += 1
                break
            print(f"  ok: {where}: `{first}` is running")
            continue
        try:
            rc = process.wait(900)
        except subprocess.TimeoutExpired:
            rc = "timeout"
        stop(process)  # what the block left running in the background
        output = open(log, errors="replace").read()
        if rc != 0:
            print(f"  FAIL: {where}: `{first}` exited {rc}: {output[-600:]}")
            failures += 1
        elif condition == "expect" and argument not in output:
            print(f"  FAIL: {where}: `{first}` did not print '{argument}': {output[-600:]}")
            failures += 1
        else:
            print(f"  ok: {where}: `{first}`" + (f" printed '{argument}'" if condition == "expect" else ""))
    for process in background:
        stop(process)
    if ran == 0:
        print(f"  FAIL: {name}: no block is marked for testing")
        failures += 1
    return failures


if __name__ == "__main__":
    sys.exit(main())
