"""The real bitbake against the pinned upstream layers, offline.

Run by tests/layer/real-bitbake (which drops root, cuts the network and
finds kas); see that script for usage. For each machine of recipes/*.yml:

  1. checks every checkout under CHECKOUTS is at the commit recipes/*.yml pins;
  2. writes the build configuration with kas's own code (the same
     bblayers.conf and local.conf that `kas build` writes) plus a
     conf/site.conf for this run: BB_NO_NETWORK = "1", parse threads;
  3. runs `bitbake -p` (parse every recipe of every layer);
  4. runs `bitbake -g attendance-image attendance-bundle` (task graph);
  5. runs `bitbake -e` of every recipe of meta-attendance and of every
     upstream recipe it bbappends, and checks in the expanded result that
     no install destination in do_install/do_deploy lies bare in ${D}, keeps
     an unexpanded variable, or is left out of every package's FILES
     (bitbake's installed-vs-shipped QA check, done statically), and that no
     FILES entry keeps an unexpanded variable.

Prints one line per step and a summary; exits 1 on any error.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
LAYER = REPO / "meta-attendance"
KAS_FILES = {"qemux86-64": REPO / "recipes" / "qemux86-64.yml",
             "raspberrypi4-64": REPO / "recipes" / "raspberrypi4-64.yml"}
TARGETS = ("attendance-image", "attendance-bundle")
# What the task graph must contain, per machine (a missing one is an error):
# the product, its boot chain and, on the Pi, the Wi-Fi firmware and udev rules.
GRAPH_MUST_HAVE = {
    "qemux86-64": ("attendance", "attendance-image-config", "rauc", "attendance-boot-image",
                   "attendance-grub-conf", "grub-efi", "linux-yocto", "wpa-supplicant"),
    "raspberrypi4-64": ("attendance", "attendance-image-config", "rauc", "u-boot", "rpi-u-boot-scr",
                        "linux-raspberrypi", "linux-firmware-rpidistro", "udev-rules-rpi",
                        "rpi-bootfiles", "wpa-supplicant"),
}
# Path variables the offline stand-in (bbparse.py) takes from the real
# oe-core, per machine (tests/layer/oe-core-vars.json, --write-oe-vars).
STANDIN_VALUES = ("prefix", "exec_prefix", "base_prefix", "bindir", "sbindir", "libdir", "libexecdir",
                  "nonarch_libdir", "base_libdir", "nonarch_base_libdir", "sysconfdir", "datadir",
                  "localstatedir", "includedir", "docdir", "mandir", "systemd_unitdir",
                  "systemd_system_unitdir", "systemd_user_unitdir", "TARGET_ARCH", "TARGET_OS",
                  "MACHINEOVERRIDES")
OE_VARS = pathlib.Path(__file__).resolve().parent / "oe-core-vars.json"
# Shell names a do_install may use that bitbake does not define.
SHELL_ENV = {"PATH", "HOME", "PWD", "IFS"}


class Run:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.lines: list[str] = []

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        self.say(f"  ERROR: {msg}")


# --- checkouts ---------------------------------------------------------------

def kas_context(work_dir: pathlib.Path, build_dir: pathlib.Path, kas_file: pathlib.Path):
    """kas's own configuration objects for one kas file (no fetching)."""
    import kas.context
    from kas.config import Config

    class _Args(argparse.Namespace):
        def __getattr__(self, name):
            return None

    os.environ["KAS_WORK_DIR"] = str(work_dir)
    os.environ["KAS_BUILD_DIR"] = str(build_dir)
    ctx = kas.context.create_global_context(_Args())
    # kas runs git with its own small environment; ours has the HOME whose
    # .gitconfig lets this user read checkouts that belong to someone else.
    ctx.environ["HOME"] = os.environ.get("HOME", "/")
    ctx.config = Config(ctx, str(kas_file))
    missing = ctx.config.find_missing_repos()
    return ctx, missing


def check_pins(run: Run, ctx) -> None:
    for repo in ctx.config.get_repos():
        if not repo.url:
            continue  # this repository
        path = pathlib.Path(repo.path)
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
        if head.returncode != 0:
            run.error(f"{repo.name}: {path} is not a git checkout ({head.stderr.strip()[:120]})")
            continue
        got = head.stdout.strip()
        if got != repo.commit:
            run.error(f"{repo.name}: {path} is at {got}, recipes pin {repo.commit}")
        else:
            run.say(f"  {repo.name:18} {got}  (pinned, branch {repo.branch})")


# --- build configuration ---------------------------------------------------

def write_conf(ctx, build_dir: pathlib.Path, args) -> dict:
    from kas.libcmds import WriteBBConfig
    from kas.libkas import get_build_environ

    env = get_build_environ("openembedded", ctx)  # sources oe-init-build-env, as kas does
    WriteBBConfig().execute(ctx)                  # bblayers.conf + local.conf, as kas does
    site = build_dir / "conf" / "site.conf"
    site.write_text(
        "# Written by tests/layer/real-bitbake (not by kas): this run only.\n"
        'BB_NO_NETWORK = "1"\n'
        f'BB_NUMBER_PARSE_THREADS = "{args.parse_threads}"\n'
        f'BB_NUMBER_THREADS = "{args.parse_threads}"\n'
        # Keep the server between the commands of this run (parse cache in memory).
        'BB_SERVER_TIMEOUT = "120"\n'
        f'ATTENDANCE_KEYS_DIR = "{build_dir / "dev-keys"}"\n'
    )
    env["LANG"] = env["LC_ALL"] = "C.UTF-8"
    return env


def bitbake(env: dict, build_dir: pathlib.Path, argv: list[str], log: pathlib.Path) -> tuple[int, str]:
    with open(log, "w") as out:
        p = subprocess.run(["bitbake", *argv], cwd=build_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                           text=True)
    return p.returncode, log.read_text(errors="replace")


def messages(text: str, kind: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(kind + ":")]


# --- bitbake -e analysis ---------------------------------------------------

_VAR = re.compile(r'^(export )?([^\s=#]+)="(.*)"$')


def parse_env(text: str) -> tuple[dict, dict]:
    """Variables and shell functions of `bitbake -e` output."""
    variables: dict[str, str] = {}
    functions: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^([A-Za-z0-9_:.${}+-]+)\(\) \{$", line)
        if m:
            body = []
            i += 1
            while i < len(lines) and lines[i] != "}":
                body.append(lines[i])
                i += 1
            functions[m.group(1)] = "\n".join(body)
            i += 1
            continue
        if line and not line.startswith("#"):
            value_lines = [line]
            while value_lines[-1].endswith(" \\") and i + 1 < len(lines):
                i += 1
                value_lines.append(lines[i])
            joined = "\n".join(v[:-2] if v.endswith(" \\") else v for v in value_lines)
            m = _VAR.match(joined.replace("\n", "\x00"))
            if m:
                val = m.group(3).replace("\x00", "\n")
                val = val.replace('\\"', '"').replace("\\`", "`").replace("\\$", "$")
                variables[m.group(2)] = val
        i += 1
    return variables, functions


def _logical_lines(body: str) -> list[str]:
    out, cur = [], ""
    for raw in body.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        for part in cur.split(";"):
            part = part.strip()
            if part:
                out.append(part)
        cur = ""
    return out


def install_destinations(body: str) -> list[tuple[str, bool]]:
    """(path, is_dir) for every `install` in a shell function, after simple
    shell assignments and `for x in ...; do ... done` loops are unrolled."""
    lines = _logical_lines(body)
    shellvars: dict[str, str] = {}
    out: list[tuple[str, bool]] = []
    made_dirs: set[str] = set()

    def subst(s: str, extra: dict) -> str:
        allv = {**shellvars, **extra}
        for k in sorted(allv, key=len, reverse=True):
            s = s.replace("${" + k + "}", allv[k])
            s = re.sub(r"\$" + re.escape(k) + r"(?![A-Za-z0-9_])", lambda _m, v=allv[k]: v, s)
        return s

    def walk(block: list[str], extra: dict) -> None:
        i = 0
        while i < len(block):
            line = re.sub(r"^(then|else|do|elif)\s+", "", block[i])
            m = re.match(r"^for (\w+) in (.*)$", line)
            if m:
                depth, j, inner = 1, i + 1, []
                while j < len(block) and depth:
                    w = re.sub(r"^(then|else)\s+", "", block[j])
                    if re.match(r"^for \w+ in ", w) or w.startswith("while "):
                        depth += 1
                    elif w == "done":
                        depth -= 1
                        if not depth:
                            break
                    inner.append(block[j])
                    j += 1
                for word in shlex.split(subst(m.group(2), extra)):
                    walk(inner, {**extra, m.group(1): word})
                i = j + 1
                continue
            a = re.match(r"^(\w+)=(\S*)$", line)
            if a:
                shellvars[a.group(1)] = subst(a.group(2).strip('"'), extra)
            elif line.startswith("install "):
                try:
                    words = shlex.split(subst(line, extra))
                except ValueError:
                    words = subst(line, extra).split()
                targets = _install_targets(words[1:], made_dirs)
                made_dirs.update(p.rstrip("/") for p, is_dir in targets if is_dir)
                out.extend(targets)
            i += 1

    walk(lines, {})
    return out


def _install_targets(words: list[str], made_dirs: set[str]) -> list[tuple[str, bool]]:
    is_dir, target_dir, operands = False, None, []
    it = iter(words)
    for w in it:
        if w == "-d":
            is_dir = True
        elif w in ("-m", "-o", "-g", "--mode", "--owner", "--group"):
            next(it, None)
        elif w == "-t":
            target_dir = next(it, None)
        elif w.startswith("-") and len(w) > 1 and not w.startswith("--"):
            # A cluster of short options (-Dm 0644, -dm0755): an option that
            # takes an argument takes the rest of the cluster or the next word.
            for k, c in enumerate(w[1:], 1):
                if c == "d":
                    is_dir = True
                elif c in "mogtS":
                    arg = w[k + 1:] or next(it, None)
                    if c == "t":
                        target_dir = arg
                    break
        else:
            operands.append(w)
    if is_dir:
        return [(o, True) for o in operands]
    if target_dir:
        return [(target_dir.rstrip("/") + "/" + os.path.basename(o), False) for o in operands]
    if len(operands) < 2:
        return []
    *srcs, dest = operands
    if dest.endswith("/") or len(srcs) > 1 or dest.rstrip("/") in made_dirs:
        return [(dest.rstrip("/") + "/" + os.path.basename(s), False) for s in srcs]
    return [(dest, False)]


def files_match(path: str, patterns: list[str]) -> bool:
    parts = path.rstrip("/").split("/")
    prefixes = ["/".join(parts[:n]) for n in range(2, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(p, pat.rstrip("/")) for pat in patterns for p in prefixes)


def layer_references() -> set[str]:
    """Every ${NAME} the layer's own files write."""
    names: set[str] = set()
    for pattern in ("*.bb", "*.bbappend", "*.inc", "*.bbclass", "*.conf"):
        for f in LAYER.rglob(pattern):
            names |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_-]*)\}", f.read_text()))
    return names


def check_recipe_env(pn: str, text: str, layer_refs: set[str] | None = None) -> list[str]:
    """Problems in one recipe's `bitbake -e` output. With layer_refs, an
    unexpanded variable counts only if the layer's own files use it (an
    upstream recipe may leave one of its own to the shell on purpose, as
    kernel.bbclass does with ${KERNEL_DEVICETREE} on qemux86-64)."""
    problems = []
    variables, functions = parse_env(text)
    d = variables.get("D", "")
    packages = variables.get("PACKAGES", "").split()
    nopackages = not packages  # nopackages, image and bundle recipes
    for name in ("do_install", "do_deploy"):
        body = functions.get(name)
        if body is None:
            continue
        shell_names = set(re.findall(r"(?:^|[\s;])(?:local\s+)?(\w+)=", body))
        shell_names |= set(re.findall(r"for (\w+) in", body)) | set(re.findall(r"read (?:-r )?(\w+)", body))
        for ref in sorted(set(re.findall(r"\$\{(@?[^}]*)\}", body))):
            base = re.split(r"[:#%/}-]", ref, 1)[0]
            if layer_refs is not None and base not in layer_refs:
                continue
            if ref.startswith("@") or (base not in shell_names and base not in SHELL_ENV):
                problems.append(f"{name} keeps an unexpanded ${{{ref}}}")
        for path, is_dir in install_destinations(body):
            if "$" in path:
                # ${NAME} left by bitbake; a plain $name is the shell's.
                left = [n for n in re.findall(r"\$\{(\w+)\}", path) if n not in shell_names
                        and (layer_refs is None or n in layer_refs)]
                if left:
                    problems.append(f"{name}: install destination {path} keeps a variable")
                continue
            if not d or not path.startswith(d + "/") and path != d:
                continue  # e.g. ${DEPLOYDIR}, ${B}
            rel = re.sub(r"/+", "/", os.path.normpath(path[len(d):] or "/"))
            if not is_dir and rel.count("/") < 2:
                problems.append(f"{name}: installs a file to the bare ${{D}}{rel}")
            if name == "do_install" and not is_dir and not nopackages and packages:
                patterns = []
                for pkg in packages:
                    patterns += variables.get(f"FILES:{pkg}", "").split()
                if not files_match(rel, patterns):
                    problems.append(f"do_install: ${{D}}{rel} is in no package's FILES (installed-vs-shipped)")
    for pkg in packages:
        val = variables.get(f"FILES:{pkg}", "")
        for ref in re.findall(r"\$\{[^}]*\}", val):
            problems.append(f"FILES:{pkg} keeps an unexpanded {ref}")
    return problems


def check_daemon_hashing(run: Run, env: dict, build_dir: pathlib.Path, variables: dict, log: pathlib.Path) -> None:
    """With externalsrc the daemon's do_compile must hash its own inputs, not
    every file of the checkout (a kas work dir inside it included)."""
    src = variables.get("EXTERNALSRC")
    if not src:
        return  # a release build (ATTENDANCE_SRCREV): fetched, no externalsrc
    with open(log, "w") as out:
        p = subprocess.run(["bitbake-getvar", "-q", "-r", "attendance", "-f", "file-checksums", "--value",
                            "do_compile"], cwd=build_dir, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    entries = [e for e in log.read_text().split() if e.endswith((":True", ":False"))]
    whole_tree = [e for e in entries if e.rsplit(":", 1)[0] in (src + "/*", src) or "oe-devtool-tree-sha1" in e]
    if p.returncode != 0 or not entries:
        run.error(f"attendance: bitbake-getvar of do_compile[file-checksums] failed (log {log})")
    elif whole_tree or not any(e.startswith(src + "/src/main.rs:") for e in entries):
        run.error(f"attendance: do_compile hashes the whole tree ({whole_tree[:2]}), not the daemon's inputs")
    else:
        outside = [e for e in entries if not e.startswith((src + "/src/", src + "/Cargo.", src + "/build.rs",
                                                           src + "/.cargo"))]
        if outside:
            run.error(f"attendance: do_compile hashes files that are not the daemon's inputs: {outside[:3]}")
        run.say(f"  attendance do_compile[file-checksums]: {len(entries)} files, all of them the daemon's inputs")


def layer_recipe_names(machine: str) -> list[str]:
    names = []
    for bb in sorted(LAYER.glob("recipes-*/*/*.bb")):
        names.append(bb.stem.split("_")[0])
    appends = sorted(LAYER.glob("recipes-*/*/*.bbappend"))
    if machine.startswith("raspberrypi"):
        appends += sorted(LAYER.glob("dynamic-layers/raspberrypi/*/*/*.bbappend"))
    for a in appends:
        pn = a.name[: -len(".bbappend")].split("_")[0]
        if pn not in names:
            names.append(pn)
    return names


def write_oe_vars(out: pathlib.Path, work_dir: pathlib.Path, pins: dict, names: set[str], values: dict) -> None:
    import json

    conf = (work_dir / "openembedded-core" / "meta" / "conf" / "bitbake.conf").read_text()
    renamed = dict(re.findall(r'^BB_RENAMED_VARIABLES\[(\w+)\] = "([^"]*)"', conf, re.M))
    data = {
        "about": ["Generated by `tests/layer/real-bitbake CHECKOUTS --write-oe-vars` from `bitbake -e` of "
                  "every meta-attendance recipe (and every recipe it appends) on both machines, against the "
                  "commits below; BB_RENAMED_VARIABLES from openembedded-core's meta/conf/bitbake.conf. "
                  "Do not edit: re-run the script. tests/layer/bbparse.py defines only what is listed here.",
                  "defined: every variable name those recipes see (global configuration and the classes "
                  "they inherit); values: the few the offline stand-in sets, per machine."],
        "pins": dict(sorted(pins.items())),
        "renamed": dict(sorted(renamed.items())),
        "values": values,
        "defined": sorted(names),
    }
    out.write_text(json.dumps(data, indent=1) + "\n")


# --- main ------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkouts", type=pathlib.Path)
    ap.add_argument("--build-dir", type=pathlib.Path)
    ap.add_argument("--machine", action="append", choices=sorted(KAS_FILES))
    ap.add_argument("--parse-threads", type=int, default=2)
    ap.add_argument("--recipe", action="append", help="only these recipes for bitbake -e (default: all of the layer)")
    ap.add_argument("--write-oe-vars", action="store_true",
                    help=f"(re)write {OE_VARS.name} from this run's bitbake -e results")
    args = ap.parse_args()
    work_dir = args.checkouts.resolve()
    build_dir = (args.build_dir or work_dir / "build").resolve()
    machines = args.machine or sorted(KAS_FILES)
    run = Run()
    oe_names: set[str] = set()
    oe_values: dict[str, dict[str, str]] = {}
    pins: dict[str, str] = {}
    started = time.monotonic()
    logs = build_dir / "real-bitbake-logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / OE_VARS.name).unlink(missing_ok=True)

    keys = build_dir / "dev-keys"
    if not (keys / "ca.cert.pem").exists():
        subprocess.run([str(REPO / "ota" / "make-dev-keys"), str(keys)], check=True, capture_output=True)

    for machine in machines:
        run.say(f"== {machine} ({KAS_FILES[machine].relative_to(REPO)})")
        ctx, missing = kas_context(work_dir, build_dir, KAS_FILES[machine])
        if missing:
            run.error(f"checkouts missing in {work_dir}: {', '.join(missing)} (run `kas checkout`)")
            continue
        check_pins(run, ctx)
        pins.update({r.name: r.commit for r in ctx.config.get_repos() if r.url})
        env = write_conf(ctx, build_dir, args)

        t = time.monotonic()
        rc, out = bitbake(env, build_dir, ["-p"], logs / f"{machine}-parse.log")
        errs, warns = messages(out, "ERROR"), messages(out, "WARNING")
        summary = re.findall(r"Parsing of (\d+) \.bb files complete \((\d+) cached, (\d+) parsed\)\. "
                             r"(\d+) targets, (\d+) skipped", out)
        detail = (f"{summary[-1][0]} .bb files, {summary[-1][3]} targets, {summary[-1][4]} skipped"
                  if summary else "no parse summary")
        run.say(f"  parse: exit {rc}, {detail}, {len(errs)} errors, {len(warns)} warnings "
                f"({time.monotonic() - t:.0f} s)")
        for e in errs:
            run.error(f"parse: {e}")
        for w in warns:
            run.warnings.append(f"{machine} parse: {w}")
            run.say(f"  WARNING: {w}")
        if rc != 0 and not errs:
            run.error(f"parse: bitbake -p exited {rc} (log {logs / f'{machine}-parse.log'})")
        if rc != 0:
            continue

        t = time.monotonic()
        gdir = logs / f"{machine}-graph"
        gdir.mkdir(exist_ok=True)
        rc, out = bitbake(env, build_dir, ["-g", *TARGETS], logs / f"{machine}-graph.log")
        for f in ("task-depends.dot", "pn-buildlist"):
            if (build_dir / f).exists():
                (build_dir / f).replace(gdir / f)
        buildlist = (gdir / "pn-buildlist").read_text().split() if (gdir / "pn-buildlist").exists() else []
        ntasks = 0
        if (gdir / "task-depends.dot").exists():
            ntasks = sum(1 for line in (gdir / "task-depends.dot").read_text().splitlines()
                         if "[label=" in line)
        errs = messages(out, "ERROR")
        run.say(f"  task graph {' + '.join(TARGETS)}: exit {rc}, {len(buildlist)} recipes, {ntasks} tasks, "
                f"{len(errs)} errors ({time.monotonic() - t:.0f} s)")
        for e in errs:
            run.error(f"graph: {e}")
        if rc != 0 and not errs:
            run.error(f"graph: bitbake -g exited {rc}")
        for w in messages(out, "WARNING"):
            run.warnings.append(f"{machine} graph: {w}")
            run.say(f"  WARNING: {w}")
        absent = [pn for pn in GRAPH_MUST_HAVE[machine] if pn not in buildlist]
        if buildlist and absent:
            run.error(f"graph: not in the build of {' + '.join(TARGETS)}: {', '.join(absent)}")

        t = time.monotonic()
        recipes = args.recipe or layer_recipe_names(machine)
        layer_refs = layer_references()
        checked, skipped = [], []
        for pn in recipes:
            rc, out = bitbake(env, build_dir, ["-e", pn], logs / f"{machine}-env-{pn}.log")
            if rc != 0:
                why = " ".join(messages(out, "ERROR"))
                if re.search(r"was skipped|is not compatible|incompatible with", why) or \
                        (pn.startswith(("attendance-boot-image", "attendance-grub-conf", "grub-efi", "linux-yocto"))
                         and machine != "qemux86-64" and "Nothing PROVIDES" in why):
                    skipped.append(pn)
                    continue
                run.error(f"bitbake -e {pn}: exit {rc}: {why[:300]}")
                continue
            checked.append(pn)
            variables, functions = parse_env(out)
            oe_names.update(n for n in variables if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", n)
                            and not n.startswith("__") and n not in functions)
            if pn == "attendance":
                oe_values[machine] = {n: variables[n] for n in STANDIN_VALUES if n in variables}
                check_daemon_hashing(run, env, build_dir, variables, logs / f"{machine}-compile-checksums.log")
            for p in check_recipe_env(pn, out, layer_refs):
                run.error(f"{pn}: {p}")
        run.say(f"  bitbake -e: {len(checked)} recipes checked ({', '.join(checked)}); "
                f"not for this machine: {', '.join(skipped) or 'none'} ({time.monotonic() - t:.0f} s)")

    if args.write_oe_vars:
        if run.errors or set(oe_values) != set(KAS_FILES):
            run.error(f"{OE_VARS.name} not written: it needs an error-free run of both machines")
        else:
            out = logs / OE_VARS.name
            write_oe_vars(out, work_dir, pins, oe_names, oe_values)
            if os.access(OE_VARS.parent, os.W_OK):
                out.replace(OE_VARS)
                out = OE_VARS
            run.say(f"  wrote {out} ({len(oe_names)} names)")
    run.say(f"== real bitbake: {len(machines)} machines, {len(run.errors)} errors, {len(run.warnings)} warnings "
            f"({time.monotonic() - started:.0f} s); logs in {logs}")
    (logs / "summary.txt").write_text("\n".join(run.lines) + "\n")
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
