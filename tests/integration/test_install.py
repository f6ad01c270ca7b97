"""make install and make uninstall, as an operator runs them: PREFIX and DESTDIR are
respected (the configuration under PREFIX/etc, or /etc for PREFIX=/usr), an existing
predcache.conf is never overwritten (the shipped one goes beside it as
predcache.conf.default), the systemd unit names the installed paths and passes
`systemd-analyze verify`, a logrotate snippet and the man pages (predcache(8),
predcache.conf(5), under PREFIX/share/man) are installed, and uninstall removes what
install put there but an edited configuration."""

import os
import subprocess

from conftest import ROOT


def make(*args):
    r = subprocess.run(["make", "--no-print-directory", "-C", ROOT] + list(args),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def render_warnings(page):
    """What groff says about a man page (nothing, for a page that renders cleanly)."""
    r = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", page], capture_output=True,
                       text=True, timeout=30)
    return r.stderr + ("" if r.returncode == 0 else "(groff exit %d)" % r.returncode)


def files_under(root):
    out = set()
    for d, _, names in os.walk(root):
        for n in names:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def test_install_twice_keeps_an_edited_conf(tmp_path):
    stage = str(tmp_path / "stage")
    make("install", "DESTDIR=" + stage)
    assert files_under(stage) == {
        "usr/local/bin/predcache",
        "usr/local/etc/predcache/predcache.conf",
        "usr/local/lib/systemd/system/predcache.service",
        "usr/local/etc/logrotate.d/predcache",
        "usr/local/share/man/man8/predcache.8",
        "usr/local/share/man/man5/predcache.conf.5",
    }
    for page, src in (("man8/predcache.8", "predcache.8"),
                      ("man5/predcache.conf.5", "predcache.conf.5")):
        installed = os.path.join(stage, "usr/local/share/man", page)
        with open(installed) as f, open(os.path.join(ROOT, "man", src)) as g:
            assert f.read() == g.read()
        assert os.stat(installed).st_mode & 0o777 == 0o644
        assert render_warnings(installed) == "", installed
    conf = os.path.join(stage, "usr/local/etc/predcache/predcache.conf")
    with open(os.path.join(ROOT, "conf", "predcache.conf")) as f:
        shipped = f.read()
    with open(conf) as f:
        assert f.read() == shipped
    with open(conf, "a") as f:
        f.write("\n# edited by the operator\n[cache]\nttl_s = 60\n")
    out = make("install", "DESTDIR=" + stage)
    assert "exists: kept" in out, out
    with open(conf) as f:
        assert f.read().endswith("ttl_s = 60\n")  # the operator's file, untouched
    with open(conf + ".default") as f:
        assert f.read() == shipped
    unit = open(os.path.join(stage, "usr/local/lib/systemd/system/predcache.service")).read()
    assert "ExecStart=/usr/local/bin/predcache -c /usr/local/etc/predcache/predcache.conf\n" \
        in unit
    assert "@BINDIR@" not in unit and "@SYSCONFDIR@" not in unit
    # reload checks the file first, then sends SIGHUP (test_reload: what SIGHUP does)
    assert "ExecReload=/usr/local/bin/predcache -c /usr/local/etc/predcache/predcache.conf " \
        "--check\nExecReload=/bin/kill -HUP $MAINPID\n" in unit
    # uninstall: everything but the edited configuration
    out = make("uninstall", "DESTDIR=" + stage)
    assert "was edited: kept" in out, out
    assert files_under(stage) == {"usr/local/etc/predcache/predcache.conf"}


def test_prefix_usr_puts_the_conf_in_etc(tmp_path):
    stage = str(tmp_path / "stage")
    make("install", "DESTDIR=" + stage, "PREFIX=/usr")
    assert files_under(stage) == {
        "usr/bin/predcache",
        "etc/predcache/predcache.conf",
        "usr/lib/systemd/system/predcache.service",
        "etc/logrotate.d/predcache",
        "usr/share/man/man8/predcache.8",
        "usr/share/man/man5/predcache.conf.5",
    }
    for page in ("man8/predcache.8", "man5/predcache.conf.5"):
        assert render_warnings(os.path.join(stage, "usr/share/man", page)) == "", page
    make("uninstall", "DESTDIR=" + stage, "PREFIX=/usr")  # unedited: all of it goes
    assert files_under(stage) == set()


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    """Installed under a real prefix (no DESTDIR), so that its ExecStart exists."""
    prefix = str(tmp_path / "usr")
    make("install", "PREFIX=" + prefix)
    unit = os.path.join(prefix, "lib/systemd/system/predcache.service")
    r = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    text = open(unit).read()
    for hardening in ("DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes",
                      "CapabilityBoundingSet=\n", "PrivateTmp=yes"):
        assert hardening in text, hardening
    # the installed binary checks the installed configuration, as ExecStartPre does
    r = subprocess.run([os.path.join(prefix, "bin/predcache"), "-c",
                        os.path.join(prefix, "etc/predcache/predcache.conf"), "--check"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
