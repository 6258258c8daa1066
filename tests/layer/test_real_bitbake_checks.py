"""The checks tests/layer/real-bitbake applies to `bitbake -e` output, on
output shaped like bitbake's (the real run needs the upstream checkouts)."""
import real_bitbake

D = "/b/tmp/work/x/attendance/0.1.0/image"


def env_text(install_body: str, files: str = "/usr/bin/* /usr/lib/sysusers.d/attendance.conf") -> str:
    """What `bitbake -e attendance` prints, reduced to what the checks read."""
    return "\n".join([
        "#",
        "# $D [2 operations]",
        f'D="{D}"',
        'PACKAGES="attendance-dbg attendance"',
        'FILES:attendance-dbg="/usr/lib/debug /usr/bin/.debug"',
        f'FILES:attendance="{files} \\',
        '    /etc/attendance"',
        'export LIBCLANG_PATH="/b/recipe-sysroot-native/usr/lib"',
        "# line: 12, file: /layer/attendance_0.1.0.bb",
        "do_install() {",
        install_body,
        "}",
        "",
    ])


def test_parse_env_reads_variables_and_functions():
    variables, functions = real_bitbake.parse_env(env_text("    true"))
    assert variables["D"] == D
    assert variables["FILES:attendance"].split() == ["/usr/bin/*", "/usr/lib/sysusers.d/attendance.conf",
                                                     "/etc/attendance"]
    assert variables["LIBCLANG_PATH"] == "/b/recipe-sysroot-native/usr/lib"
    assert functions["do_install"].strip() == "true"


def test_undefined_sysusersdir_is_reported():
    """The review's finding: ${sysusersdir} is undefined on wrynose, bitbake
    keeps it literally, the file is in no package."""
    body = (f"    install -d {D}/usr/lib/systemd/system {D}${{sysusersdir}}\n"
            f"    install -m 0644 /src/attendance.conf {D}${{sysusersdir}}/attendance.conf\n")
    problems = real_bitbake.check_recipe_env("attendance", env_text(body))
    assert any("unexpanded ${sysusersdir}" in p for p in problems), problems
    assert any("keeps a variable" in p for p in problems), problems


def test_bare_destination_is_reported():
    """The same file when the variable expands to nothing: ${D}/attendance.conf."""
    body = f"    install -m 0644 /src/attendance.conf {D}/attendance.conf\n"
    problems = real_bitbake.check_recipe_env("attendance", env_text(body))
    assert any("bare ${D}/attendance.conf" in p for p in problems), problems
    assert any("in no package's FILES" in p for p in problems), problems


def test_unshipped_file_is_reported():
    body = f"    install -D -m 0644 /src/x.conf {D}/usr/lib/tmpfiles.d/x.conf\n"
    problems = real_bitbake.check_recipe_env("attendance", env_text(body))
    assert problems == [f"do_install: ${{D}}/usr/lib/tmpfiles.d/x.conf is in no package's FILES "
                        "(installed-vs-shipped)"]


def test_unexpanded_files_entry_is_reported():
    problems = real_bitbake.check_recipe_env("attendance", env_text("    true", files="${sysusersdir}/a.conf"))
    assert problems == ["FILES:attendance keeps an unexpanded ${sysusersdir}"]


def test_a_good_install_passes():
    """Loops, shell variables and cargo's install-into-a-directory idiom."""
    body = "\n".join([
        f'    for tgt in "/b/target/x/"*; do',
        '        if [ -f "$tgt" ]; then',
        f'            install -d "{D}/usr/bin"',
        f'            install -m755 "$tgt" "{D}/usr/bin"',
        "        fi",
        "    done",
        f"    d={D}/usr/lib/sysusers.d",
        "    install -d $d",
        "    for f in attendance.conf; do",
        "        install -m 0644 /src/$f ${d}/$f",
        "    done",
        f"    install -D -m 0644 /src/config.json {D}/etc/attendance/config.json",
    ])
    assert real_bitbake.check_recipe_env("attendance", env_text(body)) == []


def test_upstream_leftovers_count_only_when_the_layer_uses_them():
    """kernel.bbclass leaves ${KERNEL_DEVICETREE} to the shell on qemux86-64;
    that is upstream's business. The same kind of leftover in a variable the
    layer writes is reported."""
    body = ("    for dtbf in ${KERNEL_DEVICETREE}; do\n        true\n    done\n"
            f"    install -d {D}${{sysusersdir}}\n")
    problems = real_bitbake.check_recipe_env("x", env_text(body), layer_refs={"sysusersdir", "D"})
    assert problems == ["do_install keeps an unexpanded ${sysusersdir}",
                        f"do_install: install destination {D}${{sysusersdir}} keeps a variable"]
    assert real_bitbake.layer_references() >= {"ATTENDANCE_TOPDIR", "D", "UNPACKDIR"}
    assert "sysusersdir" not in real_bitbake.layer_references()


def test_clustered_short_options_take_their_argument():
    """`install -Dm 0644 src dest` (u-boot.inc's extlinux.conf) installs one
    file to dest; 0644 is the mode, not a second source."""
    body = "install -Dm 0644 /b/extlinux.conf /d//boot/extlinux/extlinux.conf\n"
    assert real_bitbake.install_destinations(body) == [("/d//boot/extlinux/extlinux.conf", False)]
    assert real_bitbake.install_destinations("install -dm0755 /d/etc/x\n") == [("/d/etc/x", True)]
    assert real_bitbake.install_destinations("install -Dt /d/usr/bin a b\n") == [
        ("/d/usr/bin/a", False), ("/d/usr/bin/b", False)]


def test_a_doubled_slash_after_d_is_the_same_path():
    """u-boot.inc installs to ${D}/${UBOOT_EXTLINUX_INSTALL_DIR}/..., i.e.
    ${D}//boot/...; packaging matches it against FILES as /boot/..."""
    body = f"    install -Dm 0644 /b/extlinux.conf {D}//boot/extlinux/extlinux.conf\n"
    text = env_text(body, files="/boot/extlinux/extlinux.conf")
    assert real_bitbake.check_recipe_env("attendance", text) == []
    text = env_text(body, files="/boot/other.conf")
    assert real_bitbake.check_recipe_env("attendance", text) == [
        "do_install: ${D}/boot/extlinux/extlinux.conf is in no package's FILES (installed-vs-shipped)"]
