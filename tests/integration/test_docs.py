"""The man pages keep up with the code: every [section] and every key of
conf/predcache.conf (the keys of its commented-out examples included) has an entry in its
section of man/predcache.conf.5, every option `predcache --help` prints has an entry in
the OPTIONS of man/predcache.8, spelled as the help spells it (and no other), and both
pages render without a warning and fit 80 columns."""

import os
import re
import subprocess

from conftest import ROOT

CONF = os.path.join(ROOT, "conf", "predcache.conf")
PAGE8 = os.path.join(ROOT, "man", "predcache.8")
PAGE5 = os.path.join(ROOT, "man", "predcache.conf.5")

# ------------------------------------------------------------------ the shipped file

HEADER = re.compile(r"^\[([a-z]+)\]$")
# A named section, as a header ("[backend gpu]") or where a comment names its kind
# ("[route NAME] sections map requests ..."): its keys follow.
NAMED = re.compile(r"^\[([a-z]+)\s+[A-Za-z0-9._-]+\]")
KEY = re.compile(r"^([a-z_][a-z0-9_]*)\s*=")


def conf_keys(path=CONF):
    """{section: {key}} of the file: "[server]" for a section, "[route NAME]" for every
    named one. A comment line "# key = value" is a commented-out key: it belongs to the
    named section the comments last spoke of, else to the section it is in."""
    out = {}
    section = commented = None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            if line[0] in "#;":
                body = line[1:].strip()
                m = NAMED.match(body)
                if m:
                    commented = "[%s NAME]" % m.group(1)
                    out.setdefault(commented, set())
                    continue
                m = HEADER.match(body)
                if m:
                    commented = "[%s]" % m.group(1)
                    out.setdefault(commented, set())
                    continue
                m = KEY.match(body)
                if m:
                    out.setdefault(commented or section, set()).add(m.group(1))
                continue
            m = HEADER.match(line) or NAMED.match(line)
            if m:
                section = "[%s]" % m.group(1) if HEADER.match(line) else "[%s NAME]" % m.group(1)
                commented = None
                out.setdefault(section, set())
                continue
            m = KEY.match(line)
            assert m, "not a header, a key or a comment: %r" % line
            assert section is not None, "key outside any section: %r" % line
            out[section].add(m.group(1))
    return out


# ------------------------------------------------------------------ the man source

ESCAPES = [(r"\(aq", "'"), (r"\(dq", '"'), (r"\(mu", "x"), (r"\(bu", "*"), (r"\-", "-"),
           (r"\ ", " "), (r"\&", ""), (r"\%", ""), (r"\e", "\\")]
FONT = re.compile(r"\\f(?:[BIRP]|\(..|\[[^]]*\])")
ALTERNATING = {"BI", "BR", "IB", "IR", "RB", "RI"}


def macro_args(rest):
    """The arguments of a macro line, as troff splits them (double quotes group; "" is a
    quote)."""
    args, i = [], 0
    while i < len(rest):
        if rest[i] in " \t":
            i += 1
            continue
        if rest[i] == '"':
            i += 1
            arg = ""
            while i < len(rest):
                if rest[i] == '"':
                    if rest[i + 1:i + 2] == '"':
                        arg += '"'
                        i += 2
                        continue
                    i += 1
                    break
                arg += rest[i]
                i += 1
            args.append(arg)
        else:
            j = i
            while j < len(rest) and rest[j] not in " \t":
                j += 1
            args.append(rest[i:j])
            i = j
    return args


def text_of(line):
    """The words a source line prints (fonts dropped, the escapes used here resolved)."""
    if line.startswith("."):
        name, _, rest = line[1:].partition(" ")
        args = macro_args(rest)
        line = ("" if name in ALTERNATING else " ").join(args)
    line = FONT.sub("", line)
    for esc, repl in ESCAPES:
        line = line.replace(esc, repl)
    return " ".join(line.split())


def page_sections(path):
    """{.SH heading: [.TP tag text, ...]} of a page."""
    out, heading = {}, None
    with open(path) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(".SH "):
            heading = text_of(line)
            out.setdefault(heading, [])
        elif line == ".TP" and heading is not None and i + 1 < len(lines):
            out[heading].append(text_of(lines[i + 1]))
    return out


def tag_keys(tag):
    """The keys a conf page entry documents: "key = type", or "key, key, ..." (a tag
    that names several keys shares one meaning)."""
    names = tag.split("=", 1)[0] if "=" in tag else tag
    return {n.strip() for n in names.split(",") if n.strip()}


def page5_keys(path=PAGE5):
    return {h: set().union(*[tag_keys(t) for t in tags]) if tags else set()
            for h, tags in page_sections(path).items() if h.startswith("[")}


# ------------------------------------------------------------------ predcache --help

HELP_OPTION = re.compile(r"^ {2,6}(-\S.*?)(?:\s{2,}|$)")


def help_options(predcache_bin):
    """The option column of `predcache --help`: "-c, --config FILE", "--listen H:P", ..."""
    r = subprocess.run([predcache_bin, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    specs = []
    for line in r.stdout.splitlines():
        m = HELP_OPTION.match(line)
        if m:
            specs.append(" ".join(m.group(1).split()))
    assert len(specs) >= 10, r.stdout  # the help's layout changed: read it again
    return specs


def long_option(spec):
    m = re.search(r"--[a-z][a-z-]*", spec)
    assert m, spec
    return m.group(0)


# ------------------------------------------------------------------ the tests


def test_the_conf_reading_finds_every_kind_of_key():
    """The reading above against what the shipped file is known to hold: a real key of
    each section, the commented-out examples' keys and the route keys its comments list."""
    keys = conf_keys()
    assert set(keys) >= {"[server]", "[backend]", "[redis]", "[cache]", "[jobs]", "[log]",
                         "[backend NAME]", "[route NAME]"}, sorted(keys)
    assert {"listen", "workers"} <= keys["[server]"]
    assert {"url", "timeout_ms"} <= keys["[backend NAME]"]
    assert {"match", "backend", "cache", "api", "ttl_s"} <= keys["[route NAME]"]
    assert not ({"match", "api"} & keys["[cache]"]), keys["[cache]"]
    assert {"level", "access_log"} <= keys["[log]"]


def undocumented_keys(page5=PAGE5):
    page = page5_keys(page5)
    missing = []
    for section, keys in sorted(conf_keys().items()):
        if section not in page:
            missing.append(section)
            continue
        missing += ["%s %s" % (section, k) for k in sorted(keys - page[section])]
    return missing


def undocumented_options(predcache_bin, page8=PAGE8):
    specs = help_options(predcache_bin)
    tags = page_sections(page8)["OPTIONS"]
    return sorted({long_option(s) for s in specs} - {long_option(t) for t in tags})


def test_every_conf_section_and_key_is_in_predcache_conf_5():
    missing = undocumented_keys()
    assert not missing, "not documented in man/predcache.conf.5: %s" % ", ".join(missing)


BACKEND_ONLY = {"grpc_health_path", "grpc_url"}  # the gRPC model server is [backend]'s alone


def test_backend_name_documents_every_backend_key():
    """conf/predcache.conf: a [backend NAME] takes "url (required) and any key of
    [backend] but grpc_url"."""
    with open(CONF) as f:
        assert "any key of\n# [backend] but %s;" % ", ".join(sorted(BACKEND_ONLY)) in f.read()
    page = page5_keys()
    keys = conf_keys()["[backend]"] - BACKEND_ONLY
    assert keys <= page["[backend NAME]"], sorted(keys - page["[backend NAME]"])


def test_every_help_option_is_in_predcache_8_as_help_spells_it(predcache_bin):
    missing = undocumented_options(predcache_bin)
    assert not missing, "not documented in man/predcache.8: %s" % ", ".join(missing)
    specs = help_options(predcache_bin)
    tags = page_sections(PAGE8)["OPTIONS"]
    assert sorted(tags) == sorted(specs), \
        "man/predcache.8 OPTIONS %r, predcache --help %r" % (tags, specs)


def cut_entry(path, entry, tmp_path):
    with open(path) as f:
        src = f.read()
    assert entry in src, entry
    out = tmp_path / os.path.basename(path)
    out.write_text(src.replace(entry, "", 1))
    return str(out)


def test_an_entry_taken_out_of_a_page_is_caught(predcache_bin, tmp_path):
    """The checks above fail when an entry goes: [cache] ttl_s (the first of its two
    entries; [route NAME] keeps the other), a commented-out example key, an option."""
    assert undocumented_keys() == []
    cut = cut_entry(PAGE5, '.TP\n.BI "ttl_s = " s\n', tmp_path)
    assert undocumented_keys(cut) == ["[cache] ttl_s"]
    cut = cut_entry(PAGE5, '.TP\n.BI "match = " "METHOD PATTERN"\n', tmp_path)
    assert undocumented_keys(cut) == ["[route NAME] match"]
    cut = cut_entry(PAGE8, ".TP\n\\fB\\-\\-workers\\fR \\fIN\\fR\n", tmp_path)
    assert undocumented_options(predcache_bin, cut) == ["--workers"]


def test_the_pages_render_without_warnings_in_80_columns():
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    for path in (PAGE8, PAGE5):
        r = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", path],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stderr == "", "%s: %s" % (path, r.stderr)
        r = subprocess.run(["man", "-l", path], capture_output=True, text=True, env=env,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines and lines[0].startswith(("PREDCACHE(8)", "PREDCACHE.CONF(5)")), lines[:1]
        wide = [ln for ln in lines if len(ln) > 80]
        assert not wide, "%s: wider than 80 columns: %r" % (path, wide)
    text8 = subprocess.run(["man", "-l", PAGE8], capture_output=True, text=True, env=env,
                           timeout=30).stdout
    for word in ("SIGTERM", "SIGHUP", "SIGUSR1", "EXIT STATUS", "predcache.conf(5)"):
        assert word in text8, word
