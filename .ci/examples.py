#!/usr/bin/env python3
"""Runs the curl and grpcurl examples of Markdown files, exactly as written,
each file against a fresh quickstart server on a free port, and checks what
they answer.

Usage: examples.py RUN_COMMAND FILE...

- An example is a `curl` or `grpcurl` command in a ```sh block
  (continuation lines joined). `127.0.0.1:8080`, the quickstart's address,
  is replaced by the address the server really listens on.
- An example with `--fail-with-body`, and every grpcurl example, must
  succeed. Any other curl example shows an error: a `# NNN: why` line must
  come just before it, and its answer must be in the error shape with the
  contract's code for that status.
- A ```json block after a ```sh block (before the next one) is the answer
  of that block's last example. The answer must match it with ids, times,
  resource versions and continue tokens normalised and whitespace ignored;
  `...` in the sample stands for anything.
- A watch (`releases:watch`) streams until stopped: it is stopped after
  3 s, as Ctrl-C would, and must have been streaming NDJSON events.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ERROR_CODES = {
    "400": "ASM.01010001", "401": "ASM.01000001", "403": "ASM.01000002",
    "404": "ASM.01010002", "405": "ASM.01010006", "409": "ASM.01010003",
    "410": "ASM.01010007", "413": "ASM.01010004", "415": "ASM.01010005",
    "429": "ASM.01010008",
}
QUICKSTART_ADDRESS = "127.0.0.1:8080"


class Example:
    def __init__(self, command, expect, source):
        self.command = command
        self.expect = expect  # "NNN" or None
        self.source = source  # "FILE:LINE"
        self.sample = None


def examples_of(path):
    """The examples of `path`, in order, with the samples that follow them."""
    examples = []
    lines = open(path, encoding="utf-8").read().split("\n")
    block = None  # "sh", "json" or another fence
    expect = None
    last_of_sh_block = None  # the last example of the latest ```sh block
    sample = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if block is None and line.startswith("```"):
            block = line[3:].strip() or "plain"
            if block == "sh":
                expect, last_of_sh_block = None, None
            sample = []
        elif block is not None and line.startswith("```"):
            if block == "json" and last_of_sh_block is not None and last_of_sh_block.sample is None:
                last_of_sh_block.sample = "\n".join(sample)
            block = None
        elif block == "sh":
            match = re.match(r"^# (\d\d\d):", line)
            if match:
                expect = match.group(1)
            elif re.match(r"^(curl|grpcurl) ", line):
                start = i
                command = line
                while command.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command = command[:-1] + lines[i]
                example = Example(command, expect, f"{path}:{start + 1}")
                examples.append(example)
                last_of_sh_block = example
                expect = None
        elif block == "json":
            sample.append(line)
        elif block is None and line.startswith("## "):
            last_of_sh_block = None
        i += 1
    return examples


NORMALISE = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "UID"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "TIME"),
    (re.compile(r'"(resourceVersion|resource_version)":"\d+"'), r'"\1":"N"'),
    (re.compile(r'"continue":"[^"]*"'), '"continue":"TOKEN"'),
]


def normalise(text):
    text = re.sub(r"\s+", "", text)
    for pattern, replacement in NORMALISE:
        text = pattern.sub(replacement, text)
    return text


def matches(sample, answer):
    """Whether `answer` is what `sample` shows, `...` standing for anything."""
    parts = normalise(sample).split("...")
    answer = normalise(answer)
    if not answer.startswith(parts[0]):
        return False
    at = len(parts[0])
    for part in parts[1:-1]:
        found = answer.find(part, at)
        if found < 0:
            return False
        at = found + len(part)
    last = parts[-1] if len(parts) > 1 else ""
    if len(parts) == 1:
        return answer == parts[0]
    return answer.endswith(last) and len(answer) - len(last) >= at


def self_check():
    """The comparison itself, on answers it must take and refuse."""
    answer = '{"errorCode":"X","errorMsg":"invalid request: 8 problems","details":[{"field":"a"},{"field":"b"}]}'
    assert matches('{"errorCode":"X",...,"details":[{"field":"a"},...]}', answer)
    assert matches(answer.replace(":", ": "), answer)  # whitespace aside
    assert not matches('{"errorCode":"X","errorMsg":"invalid request: 9 problems",...}', answer)
    assert not matches('{"errorCode":"X"}', answer)  # no `...`: all of it
    assert not matches('...,"details":[{"field":"b"},{"field":"a"}]}', answer)  # order counts
    assert matches('{"uid":"28dfe891-5e10-4eba-b015-004c6d56ec7b","t":"2026-11-28T06:56:48.644Z"}',
                   '{"uid":"00000000-1111-2222-3333-444444444444","t":"2027-01-01T00:00:00Z"}')


def start_server(run_command, log_path, data_dir):
    env = dict(os.environ, MESHRELEASE_DATA_DIR=data_dir, MESHRELEASE_LISTEN="127.0.0.1:0", NO_COLOR="1")
    log = open(log_path, "w")
    server = subprocess.Popen(["bash", "-c", f"exec {run_command}"], stdout=log, stderr=log, env=env)
    deadline = time.time() + 600
    while time.time() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited:\n{open(log_path).read()}")
        match = re.search(r"address=(\S+)", open(log_path).read())
        if match:
            return server, match.group(1)
        time.sleep(0.2)
    server.kill()
    sys.exit("the server never said where it listens")


def run(example, address):
    command = example.command.replace(QUICKSTART_ADDRESS, address)
    if "releases:watch" in command:
        try:
            done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=3)
            return done.stdout + done.stderr, done.returncode, False
        except subprocess.TimeoutExpired as stopped:
            output = (stopped.stdout or b"").decode() + (stopped.stderr or b"").decode()
            return output, None, True
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr, done.returncode, False


def check(example, output, status, stopped):
    """What is wrong with the answer, or None."""
    command = example.command
    if "releases:watch" in command:
        if not stopped or not output.startswith('{"result":{"type":"'):
            return f"not a stream of NDJSON events (exit {status})"
    elif command.startswith("grpcurl") or "--fail-with-body" in command:
        if status != 0:
            return f"exit {status}"
    elif example.expect is None:
        return "an example expected to fail needs a '# NNN: why' line above it"
    else:
        code = ERROR_CODES.get(example.expect, "unknown")
        if f'"errorCode":"{code}"' not in output:
            return f"expected {example.expect} ({code})"
    if example.sample is not None and not matches(example.sample, output):
        return f"the answer is not the one shown:\n  shown:  {normalise(example.sample)}\n  answer: {normalise(output)}"
    return None


def main():
    self_check()
    run_command, files = sys.argv[1], sys.argv[2:]
    failed = total = 0
    for path in files:
        examples = examples_of(path)
        if not examples:
            sys.exit(f"no examples found in {path}")
        with tempfile.TemporaryDirectory() as data_dir:
            log_path = os.path.join(data_dir, "server.log")
            server, address = start_server(run_command, log_path, os.path.join(data_dir, "data"))
            print(f"== {path}: {len(examples)} examples against {address}")
            try:
                for example in examples:
                    total += 1
                    print(f"$ {example.command}")
                    output, status, stopped = run(example, address)
                    print(output[:600])
                    problem = check(example, output, status, stopped)
                    if problem:
                        failed += 1
                        print(f"FAILED ({example.source}): {problem}")
            finally:
                server.send_signal(signal.SIGTERM)
                try:
                    code = server.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    server.kill()
                    code = "timeout"
            if code != 0:
                failed += 1
                print(f"FAILED: the server did not stop cleanly ({code}):\n{open(log_path).read()}")
    print(f"examples: {total - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
