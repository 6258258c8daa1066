"""RAUC: a verity bundle from a test rootfs, signed with development keys
made at test time, verifies against its keyring; another key is rejected;
the devices' system.conf refuses plain bundles."""
import configparser
import pathlib

import pytest

from conftest import IMAGE_CONFIG, REPO, TARGETS, need, run

BUILD = REPO / "ota" / "build-bundle"


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    need("mkfs.ext4")
    tmp = tmp_path_factory.mktemp("rootfs")
    tree = tmp / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "etc/os-release").write_text('ID=attendance\nVERSION_ID="test"\n')
    # Incompressible content, so the squashfs is larger than one block.
    (tree / "usr/bin/payload").write_bytes(pathlib.Path("/dev/urandom").open("rb").read(256 * 1024))
    img = tmp / "rootfs.ext4"
    r = run(["mkfs.ext4", "-q", "-d", tree, img, "8M"])
    assert r.returncode == 0, r.stderr
    return img


def bundle(tmp, rootfs, keys, name, compatible="attendance-kiosk-qemux86-64", keyring=True):
    out = tmp / name
    cmd = [BUILD, "--rootfs", rootfs, "--compatible", compatible, "--version", "1.2.3",
           "--key", keys / "development-1.key.pem", "--cert", keys / "development-1.cert.pem"]
    if keyring:
        cmd += ["--keyring", keys / "ca.cert.pem"]
    r = run(cmd + [out])
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def device_conf(tmp, target, keyring):
    """image-config's system.conf with paths moved into the test directory."""
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read(IMAGE_CONFIG / "targets" / target / "etc/rauc/system.conf")
    cp["keyring"]["path"] = str(keyring)
    cp["system"]["data-directory"] = str(tmp / "rauc-data")
    f = tmp / f"system-{target}.conf"
    with f.open("w") as fh:
        cp.write(fh)
    return f


def test_bundle_verifies_with_its_keyring(tmp_path, rootfs, dev_keys):
    need("rauc")
    b = bundle(tmp_path, rootfs, dev_keys / "good", "ok.raucb")
    r = run(["rauc", "info", f"--keyring={dev_keys / 'good/ca.cert.pem'}", b])
    assert r.returncode == 0, r.stderr
    assert "Bundle Format: \tverity" in r.stdout or "verity" in r.stdout
    assert "attendance-kiosk-qemux86-64" in r.stdout and "1.2.3" in r.stdout
    assert "Verified" in r.stderr or "Verified" in r.stdout


def test_bundle_signed_by_another_key_is_rejected(tmp_path, rootfs, dev_keys):
    b = bundle(tmp_path, rootfs, dev_keys / "other", "other.raucb")
    r = run(["rauc", "info", f"--keyring={dev_keys / 'good/ca.cert.pem'}", b])
    assert r.returncode != 0
    assert "signature verification failed" in (r.stdout + r.stderr)


def test_tampered_bundle_is_rejected(tmp_path, rootfs, dev_keys):
    b = bundle(tmp_path, rootfs, dev_keys / "good", "ok.raucb")
    data = bytearray(b.read_bytes())
    # Layout: payload | signature (CMS over the manifest) | u64 signature size.
    sig_size = int.from_bytes(data[-8:], "big")
    assert 0 < sig_size < len(data)
    data[len(data) - 8 - sig_size // 2] ^= 0xFF  # inside the signature
    b.write_bytes(bytes(data))
    r = run(["rauc", "info", f"--keyring={dev_keys / 'good/ca.cert.pem'}", b])
    assert r.returncode != 0


@pytest.mark.parametrize("target", TARGETS)
def test_device_conf_accepts_verity_and_refuses_plain(tmp_path, rootfs, dev_keys, target):
    keys = dev_keys / "good"
    conf = device_conf(tmp_path, target, keys / "ca.cert.pem")
    ok = bundle(tmp_path, rootfs, keys, "ok.raucb", compatible=f"attendance-kiosk-{target}")
    r = run(["rauc", f"--conf={conf}", "info", ok])
    assert r.returncode == 0, r.stderr

    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    (plain_dir / "rootfs.ext4").write_bytes(rootfs.read_bytes())
    (plain_dir / "manifest.raucm").write_text(
        f"[update]\ncompatible=attendance-kiosk-{target}\nversion=1\n\n[bundle]\nformat=plain\n\n"
        "[image.rootfs]\nfilename=rootfs.ext4\n")
    plain = tmp_path / "plain.raucb"
    r = run(["rauc", "bundle", f"--cert={keys / 'development-1.cert.pem'}",
             f"--key={keys / 'development-1.key.pem'}", plain_dir, plain])
    assert r.returncode == 0, r.stderr
    r = run(["rauc", f"--conf={conf}", "info", plain])
    assert r.returncode != 0 and "plain' not allowed" in (r.stdout + r.stderr)


def test_dev_keys_are_development_only_and_idempotent(dev_keys):
    keys = dev_keys / "good"
    r = run(["openssl", "x509", "-noout", "-subject", "-in", keys / "ca.cert.pem"])
    assert "DEVELOPMENT" in r.stdout
    before = (keys / "development-1.key.pem").read_bytes()
    r = run([REPO / "ota/make-dev-keys", keys])
    assert r.returncode == 0 and (keys / "development-1.key.pem").read_bytes() == before
    assert (REPO / "ota/.gitignore").read_text().strip() == "dev-keys/"


def test_build_bundle_refuses_to_overwrite(tmp_path, rootfs, dev_keys):
    out = tmp_path / "exists.raucb"
    out.write_text("keep me")
    keys = dev_keys / "good"
    r = run([BUILD, "--rootfs", rootfs, "--compatible", "x", "--version", "1",
             "--key", keys / "development-1.key.pem", "--cert", keys / "development-1.cert.pem", out])
    assert r.returncode != 0 and out.read_text() == "keep me"
