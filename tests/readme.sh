#!/usr/bin/env bash
# Runs the README's walk-through literally, against a running server of the example deployment (started
# with the README's own serve command), so that a README that lies fails CI:
#
#   cargo run --release -- serve &      # as the README's first code block says
#   tests/readme.sh
#
# Every ```sh block of the section "Walk-through with curl" is run, in order, in one shell, exactly as
# written (the block that only starts the server is skipped: it is running). Each curl's HTTP status is
# recorded (curl's --write-out to standard error, so the README's own output and files are untouched) and
# checked: a command followed by a comment such as `# HTTP/2 401` must answer that status, every other
# curl a 2xx. Any command that fails fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"; rm -f tokens.json' EXIT

python3 - README.md "$work" <<'PY'
import json, re, sys
readme, work = sys.argv[1], sys.argv[2]
text = open(readme).read()
start = text.index("## Walk-through with curl")
end = text.find("\n## ", start + 1)
section = text[start:end if end != -1 else len(text)]
blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
commands = []          # (logical command, expected status or None)
for block in blocks:
    lines = block.rstrip("\n").split("\n")
    logical = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            m = re.match(r"\s*#\s*HTTP/[0-9.]+\s+(\d{3})", line)
            if m and commands:
                commands[-1] = (commands[-1][0], int(m.group(1)))
            i += 1
            continue
        cmd = line
        while cmd.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd = cmd.rstrip()[:-1] + " " + lines[i].strip()
        # A trailing comment on the command line is the README explaining it.
        commands.append((cmd, None))
        i += 1
steps = [c for c in commands if not re.fullmatch(r"\s*cargo run --release -- serve\s*(#.*)?", c[0])]
if not steps:
    sys.exit("README.md: no walk-through commands found")
script = ["set -euo pipefail",
          "curl() { command curl --write-out '%{stderr}__STATUS__ %{http_code}\\n' \"$@\"; }"]
for n, (cmd, _) in enumerate(steps):
    script.append(f"echo '__STEP__ {n}' >&2")
    script.append(cmd)
open(f"{work}/walk.sh", "w").write("\n".join(script) + "\n")
json.dump(steps, open(f"{work}/steps.json", "w"))
PY

status=0
bash "$work/walk.sh" >"$work/out" 2>"$work/err" || status=$?

python3 - "$work" "$status" <<'PY'
import json, sys
work, status = sys.argv[1], int(sys.argv[2])
steps = json.load(open(f"{work}/steps.json"))
seen = {}
current = None
for line in open(f"{work}/err"):
    if line.startswith("__STEP__ "):
        current = int(line.split()[1])
        seen.setdefault(current, [])
    elif line.startswith("__STATUS__ ") and current is not None:
        seen[current].append(int(line.split()[1]))
failures = 0
for n, (cmd, want) in enumerate(steps):
    if n not in seen:
        print(f"FAIL  not reached: {cmd}")
        failures += 1
        continue
    got = seen[n]
    ok = all(s == want for s in got) if want else all(200 <= s < 300 for s in got)
    shown = ", ".join(map(str, got)) or "no request"
    print(f"{'ok  ' if ok else 'FAIL'}  {shown:<8} {cmd[:110]}")
    failures += not ok
if status != 0:
    print(f"FAIL  the walk-through stopped with exit status {status}; its standard error:")
    print(open(f"{work}/err").read())
    failures += 1
print(f"readme: {len(steps)} commands, {failures} failed")
sys.exit(1 if failures else 0)
PY
