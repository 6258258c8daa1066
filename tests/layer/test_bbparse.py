"""Every .bb/.bbappend/.conf of the layer parses with bitbake's own parser."""
import pytest

import bbparse


@pytest.mark.parametrize("machine", bbparse.MACHINES)
def test_layer_parses(machine):
    checked = set(bbparse.parse_layer(machine))
    recipes, appends = bbparse.layer_files()
    repo = bbparse.REPO
    assert {str(f.relative_to(repo)) for f in recipes + appends} <= checked
    assert {"meta-attendance/conf/layer.conf", "meta-attendance/conf/distro/attendance-os.conf"} <= checked
    assert len(recipes) >= 7 and len(appends) >= 5


@pytest.mark.parametrize("machine", bbparse.MACHINES)
def test_layer_parses_with_another_distro(machine):
    """yocto-check-layer's test_parse: adding the layer to a build with
    another distro (here oe-core's nodistro) must not break parsing."""
    checked = set(bbparse.parse_layer(machine, distro="nodistro"))
    recipes, _ = bbparse.layer_files()
    assert {str(f.relative_to(bbparse.REPO)) for f in recipes} <= checked


def test_every_bbappend_targets_a_pattern_upstream_has():
    _, appends = bbparse.layer_files()
    names = {a.name for a in appends}
    assert {"rauc-conf.bbappend", "rauc_%.bbappend", "grub-efi_%.bbappend", "linux-yocto_%.bbappend"} <= names


@pytest.mark.parametrize(
    "text, why",
    [
        ('LICENSE = "MIT"\nSRC_URI_append = " file://x"\n', "old override syntax"),
        ('LICENSE = "MIT"\ndo_install() {\n    true\n', "unclosed function"),
        ("inherit cargo-updat-recipe-crates\n", "unknown class"),
        ('FOO = "${@1/0}"\n', "broken inline python"),
        ('FOO = "unterminated\n', "syntax error"),
        ('VOLATILE_LOG_DIR = "yes"\n', "variable obsolete on wrynose"),
        ('LICENSE_FLAGS_WHITELIST = "commercial"\n', "variable renamed"),
    ],
)
def test_parser_rejects(text, why):
    with pytest.raises(bbparse.ParseFailure):
        bbparse.parse_text(text)


def test_unknown_global_class_is_rejected(tmp_path, monkeypatch):
    import bb

    conf = bbparse.LAYER / "conf" / "distro" / "attendance-os.conf"
    bad = tmp_path / "attendance-os.conf"
    bad.write_text(conf.read_text() + '\nINHERIT += "reproducible_build"\n')
    real_handle = bb.parse.handle

    def handle(fn, d, include=0, baseconfig=False):
        return real_handle(str(bad) if str(fn) == str(conf) else fn, d, include, baseconfig)

    monkeypatch.setattr(bb.parse, "handle", handle)
    with pytest.raises(bb.parse.ParseError):
        bbparse.base_config("qemux86-64", tmp_path)


def test_parser_accepts_a_good_recipe():
    r = bbparse.parse_text('LICENSE = "MIT"\ninherit systemd\nSRC_URI:append:attendance-os = " file://x"\n')
    assert r["d"].getVar("SRC_URI").split() == ["file://x"]


@pytest.mark.parametrize("machine", bbparse.MACHINES)
def test_no_recipe_name_is_an_override(machine, tmp_path):
    """A recipe named like the distro or a machine override turns
    RDEPENDS:${PN} into a conditional assignment (bitbake's pn-overrides QA)."""
    base = bbparse.base_config(machine, tmp_path)
    overrides = set(base.getVar("OVERRIDES").split(":"))
    recipes, _ = bbparse.layer_files()
    for r in recipes:
        pn = r.stem.split("_")[0]
        assert pn not in overrides, f"{r.name}: PN {pn} is in OVERRIDES"
