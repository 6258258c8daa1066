"""Parse meta-attendance with bitbake's own parser (the `bb` library that the
bitbake-setup package ships), the way bitbake parses a layer:

  conf/layer.conf -> conf/distro/attendance-os.conf -> each kas local_conf_header
  -> every .bb (with its .bbappend files) and every .bbappend (on a stand-in
  base recipe), for each MACHINE, then bitbake's finalize (deferred inherits,
  key expansion, anonymous python, task setup), then expansion of every
  variable the layer sets.

Classes the recipes inherit come from other layers (oe-core, meta-rauc) that
are not available offline; they are replaced by empty stand-ins, but only for
the class names listed in UPSTREAM_CLASSES (each checked to exist upstream on
the pinned wrynose commits). Any other inherit fails the parse, so a typo in a
class name is caught. Syntax errors, the old override syntax (FOO_append)
and python errors in inline expansions all fail it.
"""
from __future__ import annotations

import json
import logging
import pathlib
import re
import tempfile

# The bitbake-setup wheel ships bitbake's `bb` package but not `hashserv`,
# which bb.siggen imports for the hash-equivalence server. Parsing with the
# "noop" signature handler never talks to it: empty modules satisfy the import.
import sys
import types

for _mod in ("hashserv", "hashserv.client"):
    sys.modules.setdefault(_mod, types.ModuleType(_mod))
sys.modules["hashserv"].client = sys.modules["hashserv.client"]

import bb  # noqa: E402
import bb.data  # noqa: E402
import bb.event  # noqa: E402
import bb.parse  # noqa: E402
import bb.parse.ast  # noqa: E402
import bb.siggen  # noqa: E402
import bb.utils  # noqa: E402
import yaml  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
LAYER = REPO / "meta-attendance"
MACHINES = ("qemux86-64", "raspberrypi4-64")

# Class name -> where it lives upstream (all on the wrynose branches pinned in
# recipes/common.yml). Stand-ins are empty, except what the layer's own
# parse-time logic reads from them.
UPSTREAM_CLASSES = {
    "allarch": "openembedded-core meta/classes-recipe/allarch.bbclass",
    "bundle": "meta-rauc classes-recipe/bundle.bbclass",
    "cargo": "openembedded-core meta/classes-recipe/cargo.bbclass",
    "cargo-update-recipe-crates": "openembedded-core meta/classes-recipe/cargo-update-recipe-crates.bbclass",
    "core-image": "openembedded-core meta/classes-recipe/core-image.bbclass",
    "deploy": "openembedded-core meta/classes-recipe/deploy.bbclass",
    "externalsrc": "openembedded-core meta/classes/externalsrc.bbclass",
    "nopackages": "openembedded-core meta/classes-recipe/nopackages.bbclass",
    "systemd": "openembedded-core meta/classes-recipe/systemd.bbclass",
    "useradd": "openembedded-core meta/classes/useradd.bbclass",
    "rm_work": "openembedded-core meta/classes/rm_work.bbclass",
}

# What the real openembedded-core defines, generated from `bitbake -e` of the
# pinned commits (tests/layer/real-bitbake CHECKOUTS --write-oe-vars): the
# names every layer recipe sees there, the values of the path variables per
# machine, and the variables bitbake.conf declares renamed or obsolete. The
# stand-in below sets nothing that is not in that list (test_bbparse checks
# it), and a layer file that refers to a variable neither upstream nor the
# layer defines fails the parse: ${sysusersdir}, say, which wrynose lacks.
OE_VARS = json.loads((pathlib.Path(__file__).resolve().parent / "oe-core-vars.json").read_text())
OE_DEFINED = frozenset(OE_VARS["defined"])

# The structure of oe-core's bitbake.conf the layer's expansions need (names
# and layout as upstream; paths under a temporary TOPDIR).
BITBAKE_CONF = r"""
TOPDIR = "{topdir}"
TMPDIR = "${{TOPDIR}}/tmp"
BBPATH = "{stubs}"
MACHINE = "{machine}"
DISTRO = "{distro}"
DISTROOVERRIDES = "${{DISTRO}}"
OVERRIDES = "${{TARGET_OS}}:${{TARGET_ARCH}}:pn-${{PN}}:${{MACHINEOVERRIDES}}:${{DISTROOVERRIDES}}:class-target:forcevariable"
PN = "${{@bb.parse.vars_from_file(d.getVar('FILE', False),d)[0] or 'defaultpkgname'}}"
PV = "${{@bb.parse.vars_from_file(d.getVar('FILE', False),d)[1] or '1.0'}}"
PR = "r0"
BPN = "${{PN}}"
BP = "${{BPN}}-${{PV}}"
FILE_DIRNAME = "${{@os.path.dirname(d.getVar('FILE', False))}}"
FILESPATH = "${{FILE_DIRNAME}}/${{BP}}:${{FILE_DIRNAME}}/${{BPN}}:${{FILE_DIRNAME}}/files"
FILESEXTRAPATHS ?= "__default:"
WORKDIR = "${{TMPDIR}}/work/${{PN}}/${{PV}}"
UNPACKDIR = "${{WORKDIR}}/sources"
S = "${{UNPACKDIR}}/${{BP}}"
B = "${{S}}"
D = "${{WORKDIR}}/image"
T = "${{WORKDIR}}/temp"
DEPLOYDIR = "${{WORKDIR}}/deploy"
DEPLOY_DIR_IMAGE = "${{TMPDIR}}/deploy/images/${{MACHINE}}"
COREBASE = "/oe-core"
COMMON_LICENSE_DIR = "${{COREBASE}}/meta/files/common-licenses"
PACKAGES = "${{PN}}"
FILES:${{PN}} = ""
DEPENDS = ""
RDEPENDS:${{PN}} = ""
SRC_URI = ""
IMAGE_FSTYPES = ""
BB_SIGNATURE_HANDLER = "noop"
DISTRO_VERSION = "0"
"""


def _oe_conf(machine: str) -> str:
    """Values and renamed-variable declarations from the real oe-core."""
    lines = [f'{k} = "{v}"' for k, v in sorted(OE_VARS["values"][machine].items())]
    lines += [f'BB_RENAMED_VARIABLES[{k}] = "{v}"' for k, v in sorted(OE_VARS["renamed"].items())]
    return "\n".join(lines) + "\n"


def standin_names() -> set[str]:
    """Every variable the stand-in configuration sets."""
    names = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)(?::\S+)? \??=", BITBAKE_CONF, re.M))
    for machine in OE_VARS["values"]:
        names |= set(OE_VARS["values"][machine])
    return names


class ParseFailure(Exception):
    pass


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


def _stubs(root: pathlib.Path) -> None:
    for sub in ("classes", "classes-recipe", "classes-global", "conf"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, where in UPSTREAM_CLASSES.items():
        subdir = where.split()[1].split("/")[-2]  # classes, classes-recipe, classes-global
        (root / subdir / f"{name}.bbclass").write_text(f"# stand-in for {where}\n")
    (root / "classes" / "base.bbclass").write_text("# stand-in for oe-core base.bbclass\n")


def base_config(machine: str, tmp: pathlib.Path, distro: str = "attendance-os") -> "bb.data_smart.DataSmart":
    stubs = tmp / "stubs"
    _stubs(stubs)
    conf = BITBAKE_CONF.format(
        distro=distro,
        topdir=tmp / "build",
        stubs=f"{stubs}:{LAYER}",
        machine=machine,
    ) + _oe_conf(machine)
    bbconf = stubs / "conf" / "bitbake.conf"
    bbconf.write_text(conf)

    d = bb.data.init()
    d.enableTracking()  # variable history: which file set what
    d.setVar("__bbclasstype", "global")
    d.setVar("BBPATH", str(stubs))
    bb.parse.init_parser(d)
    d = bb.parse.handle(str(bbconf), d, True)

    # conf/layer.conf as bitbake's cooker reads it (LAYERDIR set around it).
    d.setVar("LAYERDIR", str(LAYER))
    d.setVar("LAYERDIR_RE", str(LAYER))
    d = bb.parse.handle(str(LAYER / "conf" / "layer.conf"), d, True)
    d.delVar("LAYERDIR")
    d.delVar("LAYERDIR_RE")
    d.setVar("BBPATH", f"{stubs}:{LAYER}")

    if distro == "attendance-os":
        d = bb.parse.handle(str(LAYER / "conf" / "distro" / "attendance-os.conf"), d, True)
    else:
        return d  # another distro, no kas fragments: the layer must still parse

    # The kas files' local.conf fragments.
    for kas in sorted((REPO / "recipes").glob("*.yml")):
        cfg = yaml.safe_load(kas.read_text())
        for name, text in (cfg.get("local_conf_header") or {}).items():
            frag = tmp / f"local-{kas.stem}-{name}.conf"
            frag.write_text(text)
            d = bb.parse.handle(str(frag), d, True)

    # Global classes, as bitbake's cooker inherits them after the
    # configuration: an INHERIT of a class that does not exist fails here.
    for cls in (d.getVar("INHERIT") or "").split():
        bb.parse.BBHandler.inherit(cls, "INHERIT", 0, d)
    return d


def layer_files() -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    recipes = sorted(LAYER.glob("recipes-*/*/*.bb"))
    appends = sorted(LAYER.glob("recipes-*/*/*.bbappend")) + sorted(LAYER.glob("dynamic-layers/*/*/*/*.bbappend"))
    return recipes, appends


def _expand_layer_vars(d, fn: str, prefixes: tuple[str, ...]) -> None:
    """Expand every variable and flag value that a layer file set."""
    for var in list(d.keys()):
        hist = d.varhistory.variable(var)
        # A shell or python function's history names bitbake's ast.py; the
        # file it was written in is its `filename` flag.
        files = [str(h.get("file", "")) for h in hist] + [str(d.getVarFlag(var, "filename", False) or "")]
        if not any(f.startswith(prefixes) for f in files):
            continue
        if d.getVarFlag(var, "func", False):
            continue  # shell/python task bodies are not expanded at parse time
        try:
            d.getVar(var)
            for flag in (d.getVarFlags(var) or {}):
                if not flag.startswith("_"):
                    d.getVarFlag(var, flag)
        except Exception as e:  # bb.data_smart.ExpansionError and friends
            raise ParseFailure(f"{fn}: expanding {var}: {e}") from e


# Set by bitbake itself while it reads a layer.conf (and removed after).
_BITBAKE_SET = frozenset({"LAYERDIR", "LAYERDIR_RE"})
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_-]*)\}")


def _shell_names(body: str) -> set[str]:
    names = set(re.findall(r"(?:^|[\s;(])(?:local\s+|export\s+)?([A-Za-z_]\w*)=", body))
    names |= set(re.findall(r"\bfor ([A-Za-z_]\w*) in\b", body))
    names |= set(re.findall(r"\bread (?:-r )?([A-Za-z_]\w*)", body))
    return names


def _check_references(d, fn: str, prefixes: tuple[str, ...]) -> None:
    """Every ${NAME} a layer file writes must be defined by the real oe-core
    (OE_DEFINED), by the layer itself, or be a shell variable of the function
    it appears in: bitbake leaves an undefined ${NAME} as it is, so
    `install ... ${D}${sysusersdir}/x` silently installs to a wrong path."""
    bad = set()
    for var in list(d.keys()):
        hist = d.varhistory.variable(var)
        # A shell or python function's history names bitbake's ast.py; the
        # file it was written in is its `filename` flag.
        files = [str(h.get("file", "")) for h in hist] + [str(d.getVarFlag(var, "filename", False) or "")]
        if not any(f.startswith(prefixes) for f in files):
            continue
        raw = d.getVar(var, False)
        texts = [raw] if isinstance(raw, str) else []
        for flag, value in (d.getVarFlags(var) or {}).items():
            if not flag.startswith("_") and isinstance(value, str):
                texts.append(value)
        shell = _shell_names(raw) if isinstance(raw, str) and d.getVarFlag(var, "func", False) else set()
        for text in texts:
            for name in _REF.findall(text):
                if name in shell or name in OE_DEFINED or name in _BITBAKE_SET or d.getVar(name, False) is not None:
                    continue
                bad.add(f"${{{name}}} (in {var})")
    if bad:
        raise ParseFailure(f"{fn}: undefined in openembedded-core and in the layer: {', '.join(sorted(bad))}")


def parse_recipe(
    recipe: pathlib.Path, appends: list[pathlib.Path], base, label: str | None = None, prefixes: tuple[str, ...] = ()
) -> dict:
    d = bb.data.createCopy(base)
    d.setVar("__bbclasstype", "recipe")
    if appends:
        d.setVar("__BBAPPEND", " ".join(str(a) for a in appends))
    log = _Collect()
    bblogger = logging.getLogger("BitBake")
    bblogger.addHandler(log)
    try:
        datastores = bb.parse.handle(str(recipe), d, 0)
    except bb.BBHandledException as e:
        raise ParseFailure(f"{label or recipe}: {'; '.join(log.records) or e}") from e
    except bb.parse.ParseError as e:
        raise ParseFailure(f"{label or recipe}: {e}") from e
    except Exception as e:
        raise ParseFailure(f"{label or recipe}: {type(e).__name__}: {e} {'; '.join(log.records)}") from e
    finally:
        bblogger.removeHandler(log)
    if log.records:
        raise ParseFailure(f"{label or recipe}: {'; '.join(log.records)}")
    main = datastores[""]
    if main.getVar("__SKIPPED"):
        return {"skipped": main.getVar("__SKIPPED"), "d": main}
    _expand_layer_vars(main, label or str(recipe), (str(LAYER), *prefixes))
    _check_references(main, label or str(recipe), (str(LAYER), *prefixes))
    return {"skipped": None, "d": main}


def appends_for(recipe_pn_pv: str, appends: list[pathlib.Path]) -> list[pathlib.Path]:
    out = []
    for a in appends:
        stem = a.name[: -len(".bbappend")]
        if stem == recipe_pn_pv or (stem.endswith("%") and recipe_pn_pv.startswith(stem[:-1])):
            out.append(a)
    return out


def parse_append_alone(append: pathlib.Path, base, tmp: pathlib.Path) -> dict:
    """Parse a .bbappend of an upstream recipe on top of a stand-in recipe."""
    stem = append.name[: -len(".bbappend")]
    name = stem.replace("%", "1.0") if "_" in stem else f"{stem}_1.0"
    fake = tmp / "standin" / append.parent.name / f"{name}.bb"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text('SUMMARY = "stand-in for the upstream recipe"\nLICENSE = "MIT"\n')
    return parse_recipe(fake, [append], base, label=str(append.relative_to(REPO)))


def parse_layer(machine: str, distro: str = "attendance-os") -> list[str]:
    """Parse everything for one machine; return the list of checked files."""
    checked = []
    with tempfile.TemporaryDirectory() as t:
        tmp = pathlib.Path(t)
        base = base_config(machine, tmp, distro)
        checked += ["meta-attendance/conf/layer.conf", "meta-attendance/conf/distro/attendance-os.conf"]
        recipes, appends = layer_files()
        own_appends = set()
        for r in recipes:
            mine = appends_for(r.stem, appends)
            own_appends.update(mine)
            parse_recipe(r, mine, base)
            checked.append(str(r.relative_to(REPO)))
            checked += [str(a.relative_to(REPO)) for a in mine]
        for a in appends:
            if a in own_appends:
                continue
            parse_append_alone(a, base, tmp)
            checked.append(str(a.relative_to(REPO)))
    return checked


def parse_text(text: str, machine: str = "qemux86-64", name: str = "selftest_1.0.bb") -> dict:
    """Parse a recipe given as text (for the harness' own tests)."""
    with tempfile.TemporaryDirectory() as t:
        tmp = pathlib.Path(t)
        base = base_config(machine, tmp)
        f = tmp / name
        f.write_text(text)
        return parse_recipe(f, [], base, prefixes=(str(tmp),))


if __name__ == "__main__":
    import sys

    bad = 0
    for m in MACHINES:
        try:
            files = parse_layer(m)
            print(f"{m}: parsed {len(files)} files")
        except ParseFailure as e:
            bad += 1
            print(f"{m}: {e}")
    sys.exit(1 if bad else 0)
