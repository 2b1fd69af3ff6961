"""Checks deploy/terraform without a terraform binary (there is none in CI).

1. Every .tf file parses (python-hcl2).
2. Every root under services/ calls modules/service with every variable the module
   requires (no default) and no variable the module does not declare, and declares
   every `var.X` it uses.
3. Every file is formatted as `terraform fmt` would format it, for the constructs
   these files use: two spaces per nesting level, no tabs or trailing blanks, one
   newline at the end, and in each run of consecutive one-line attributes the `=`
   aligned one space after the longest name (hclwrite's rule: a line opening a
   multi-line value, a comment, a blank line or a closing bracket ends the run).

Usage: python3 scripts/check-terraform.py deploy/terraform
"""

import pathlib
import re
import sys

import hcl2

META = {"source", "version", "count", "for_each", "providers", "depends_on"}
OPEN = "([{"
CLOSE = ")]}"


def unquote(key):
    return key.strip('"')


def blocks(doc, kind):
    """{label: body} of the blocks of `kind` (variable, module) in a parsed file."""
    found = {}
    for entry in doc.get(kind, []):
        for label, body in entry.items():
            found[unquote(label)] = body
    return found


def code(line):
    """The line without string contents and comments, for bracket counting."""
    out, quoted, i = [], False, 0
    while i < len(line):
        c = line[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
                out.append(c)
        elif c == '"':
            quoted = True
            out.append(c)
        elif c == "#" or line.startswith("//", i):
            break
        else:
            out.append(c)
        i += 1
    return "".join(out)


def net_brackets(text):
    return sum(1 for c in text if c in OPEN) - sum(1 for c in text if c in CLOSE)


ASSIGN = re.compile(r"^(\s*)([^=\s][^=]*?)\s*=(?![=>])\s*(.*)$")


def check_format(path):
    problems = []
    lines = path.read_text().split("\n")
    if lines[-1] != "" or (len(lines) > 1 and lines[-2] == ""):
        problems.append("must end with exactly one newline")
    indents = []  # hclwrite's indent stack: the openers of each indenting line
    run = []  # (line number, width of the name, column of the `=`)

    def close_run():
        if run:
            width = max(w for _, w, _ in run)
            for number, _, column in run:
                if column != width + 1:
                    problems.append(f"line {number}: `=` at column {column + 1}, terraform fmt puts it at {width + 2}")
        run.clear()

    for number, line in enumerate(lines, 1):
        if "\t" in line:
            problems.append(f"line {number}: tab")
        if line != line.rstrip():
            problems.append(f"line {number}: trailing blank")
        stripped = line.strip()
        text = code(line)
        if not stripped:
            close_run()
            continue
        net = net_brackets(text)
        expected = 2 * len(indents)
        if net > 0:
            indents.append(net)
        elif net < 0:
            closed = -net
            while closed > 0 and indents:
                if closed >= indents[-1]:
                    closed -= indents.pop()
                else:
                    indents[-1] -= closed
                    closed = 0
            expected = 2 * len(indents)
        indent = len(line) - len(line.lstrip(" "))
        if indent != expected:
            problems.append(f"line {number}: indented {indent}, terraform fmt indents {expected}")
        match = ASSIGN.match(text)
        if match and not stripped.startswith("#") and net_brackets(match.group(3)) == 0:
            name_end = len(match.group(1)) + len(match.group(2))
            run.append((number, name_end, text.index("=", name_end)))
        else:
            close_run()
    close_run()
    if indents:
        problems.append("brackets do not balance")
    return problems


def main(root):
    root = pathlib.Path(root)
    files = sorted(root.rglob("*.tf"))
    failures = []
    parsed = {}
    for path in files:
        try:
            with path.open() as f:
                parsed[path] = hcl2.load(f)
        except Exception as error:  # noqa: BLE001 - report any parser error
            failures.append(f"{path}: does not parse: {error}")
        failures += [f"{path}: {p}" for p in check_format(path)]

    module_dir = root / "modules" / "service"
    variables = {}
    for path in module_dir.glob("*.tf"):
        variables.update(blocks(parsed.get(path, {}), "variable"))
    required = {name for name, body in variables.items() if "default" not in body}
    roots = sorted(p for p in (root / "services").iterdir() if p.is_dir())
    for service_root in roots:
        calls, declared, used = {}, set(), set()
        for path in service_root.glob("*.tf"):
            doc = parsed.get(path, {})
            calls.update(blocks(doc, "module"))
            declared |= set(blocks(doc, "variable"))
            used |= set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))
        service = calls.get("service")
        if service is None:
            failures.append(f"{service_root}: no module \"service\"")
            continue
        passed = {unquote(k) for k in service if not k.startswith("__")} - META
        for name in sorted(required - passed):
            failures.append(f"{service_root}: module service needs `{name}`")
        for name in sorted(passed - set(variables)):
            failures.append(f"{service_root}: module service has no variable `{name}`")
        for name in sorted(used - declared):
            failures.append(f"{service_root}: var.{name} is not declared")
    for failure in failures:
        print(failure, file=sys.stderr)
    if failures:
        return 1
    print(
        f"terraform: {len(files)} files parse and are formatted; {len(roots)} roots wire "
        f"modules/service's {len(variables)} variables ({len(required)} required)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "deploy/terraform"))
