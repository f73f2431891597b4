"""sockmsg_backend - the build backend (PEP 517) of the sockmsg package.

pip install ./examples/python calls the hooks below to build a wheel of
sockmsg.py, then installs it.  The backend is standard library only and
needs nothing downloaded (pyproject.toml: requires = []), so the package
installs with no package index reachable, as the rest of libsockmsg
builds.  It reads the package's metadata from the [project] table of
pyproject.toml, and knows just enough of the formats it writes:

  wheel   sockmsg.py and sockmsg-VERSION.dist-info/ (METADATA, WHEEL,
          RECORD), tagged py3-none-any
  sdist   sockmsg-VERSION.tar.gz: the files in SDIST_FILES and PKG-INFO

Archive timestamps come from SOURCE_DATE_EPOCH when it is set, so two
builds of the same files are byte for byte the same.
"""
import base64
import gzip
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ["sockmsg.py"]
SDIST_FILES = ["pyproject.toml", "README.md", "sockmsg.py", "server.py", "client.py",
               "backend/sockmsg_backend.py"]
TAG = "py3-none-any"


# ---- pyproject.toml ----

def _parse_toml_value(text, i):
    """Parses the TOML value at text[i:]: a string, integer, boolean, array
    or inline table.  Returns (value, index after it)."""
    def skip(i):
        while i < len(text):
            if text[i] in " \t\r\n,":
                i += 1
            elif text[i] == "#":
                i = text.index("\n", i) if "\n" in text[i:] else len(text)
            else:
                break
        return i

    c = text[i]
    if text.startswith('"""', i) or text.startswith("'''", i):
        raise ValueError("multi-line strings are not supported here")
    if c == '"':
        m = re.compile(r'"((?:[^"\\\n]|\\.)*)"').match(text, i)
        body = m.group(1)
        value = re.sub(r'\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)', _unescape, body)
        return value, m.end()
    if c == "'":
        end = text.index("'", i + 1)
        return text[i + 1:end], end + 1
    if c == "[":
        items, i = [], skip(i + 1)
        while text[i] != "]":
            value, i = _parse_toml_value(text, i)
            items.append(value)
            i = skip(i)
        return items, i + 1
    if c == "{":
        table, i = {}, skip(i + 1)
        while text[i] != "}":
            m = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*').match(text, i)
            if not m:
                raise ValueError("bad inline table at %r" % text[i:i + 20])
            table[m.group(1)], i = _parse_toml_value(text, m.end())
            i = skip(i)
        return table, i + 1
    m = re.compile(r'(true|false|[+-]?[0-9_]+)\b').match(text, i)
    if not m:
        raise ValueError("unsupported value at %r" % text[i:i + 20])
    word = m.group(1)
    value = {"true": True, "false": False}.get(word)
    return (int(word.replace("_", "")) if value is None else value), m.end()


def _unescape(m):
    e = m.group(1)
    if e[0] in "uU":
        return chr(int(e[1:], 16))
    return {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", '"': '"', "\\": "\\"}[e]


def parse_project_table(text):
    """The [project] table of a pyproject.toml, for Pythons without tomllib
    (before 3.11).  It reads the forms this package's file uses: bare keys,
    strings, integers, booleans, arrays and inline tables, comments."""
    project, section, i = {}, None, 0
    line_re = re.compile(r'[ \t]*(?:#[^\n]*)?\n|[ \t]*\[([^\]\n]+)\][ \t]*(?:#[^\n]*)?(?:\n|$)'
                         r'|[ \t]*([A-Za-z0-9_-]+)[ \t]*=[ \t]*')
    while i < len(text):
        m = line_re.match(text, i)
        if not m:
            raise ValueError("pyproject.toml: cannot read %r" % text[i:i + 40])
        i = m.end()
        if m.group(1) is not None:
            section = m.group(1).strip()
        elif m.group(2) is not None:
            value, i = _parse_toml_value(text, i)
            if section == "project":
                project[m.group(2)] = value
            rest = re.compile(r'[ \t]*(?:#[^\n]*)?(?:\n|$)').match(text, i)
            if not rest:
                raise ValueError("pyproject.toml: text after the value of %s" % m.group(2))
            i = rest.end()
    return project


def read_project(root=ROOT):
    with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    try:
        import tomllib
    except ImportError:
        return parse_project_table(text)
    return tomllib.loads(text)["project"]


# ---- metadata ----

def metadata(root=ROOT):
    """The core metadata (version 2.1) as text: headers, a blank line, the
    README as the long description."""
    p = read_project(root)
    lines = ["Metadata-Version: 2.1", "Name: " + p["name"], "Version: " + p["version"],
             "Summary: " + p["description"]]
    for a in p.get("authors", []):
        if "email" in a:
            lines.append("Author-email: %s <%s>" % (a["name"], a["email"]))
        else:
            lines.append("Author: " + a["name"])
    if "license" in p:
        lines.append("License: " + p["license"]["text"])
    if p.get("keywords"):
        lines.append("Keywords: " + ",".join(p["keywords"]))
    lines += ["Classifier: " + c for c in p.get("classifiers", [])]
    for label, url in p.get("urls", {}).items():
        lines.append("Project-URL: %s, %s" % (label, url))
    if "requires-python" in p:
        lines.append("Requires-Python: " + p["requires-python"])
    lines += ["Requires-Dist: " + d for d in p.get("dependencies", [])]
    body = ""
    if "readme" in p:
        lines.append("Description-Content-Type: text/markdown")
        with open(os.path.join(root, p["readme"]), encoding="utf-8") as f:
            body = f.read()
    return "\n".join(lines) + "\n\n" + body


def _name_version(root=ROOT):
    p = read_project(root)
    return re.sub(r"[-_.]+", "_", p["name"]).lower(), p["version"]


def _read(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


def _timestamp():
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))  # 1980-01-01
    return max(epoch, 315532800)


# ---- PEP 517 hooks ----

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def _dist_info_files():
    name, version = _name_version()
    wheel = "Wheel-Version: 1.0\nGenerator: sockmsg_backend\nRoot-Is-Purelib: true\nTag: %s\n" % TAG
    return "%s-%s.dist-info" % (name, version), {"METADATA": metadata(), "WHEEL": wheel}


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    dist_info, files = _dist_info_files()
    os.makedirs(os.path.join(metadata_directory, dist_info), exist_ok=True)
    for fname, text in files.items():
        with open(os.path.join(metadata_directory, dist_info, fname), "w", encoding="utf-8") as f:
            f.write(text)
    return dist_info


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name, version = _name_version()
    dist_info, info = _dist_info_files()
    entries = []
    entries += [(m, _read(m)) for m in MODULES]
    entries += [(dist_info + "/" + fname, text.encode("utf-8")) for fname, text in info.items()]
    record = []
    for path, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (path, digest, len(data)))
    record.append(dist_info + "/RECORD,,")
    entries.append((dist_info + "/RECORD", ("\n".join(record) + "\n").encode("utf-8")))

    filename = "%s-%s-%s.whl" % (name, version, TAG)
    stamp = time.gmtime(_timestamp())[:6]
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in entries:
            zi = zipfile.ZipInfo(path, stamp)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return filename


def build_sdist(sdist_directory, config_settings=None):
    name, version = _name_version()
    base = "%s-%s" % (name, version)
    filename = base + ".tar.gz"
    files = [(f, _read(f)) for f in SDIST_FILES]
    files.append(("PKG-INFO", metadata().encode("utf-8")))
    mtime = _timestamp()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, data in sorted(files):
            ti = tarfile.TarInfo(base + "/" + path)
            ti.size, ti.mtime, ti.mode = len(data), mtime, 0o644
            t.addfile(ti, io.BytesIO(data))
    with open(os.path.join(sdist_directory, filename), "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=mtime, filename="") as g:
            g.write(raw.getvalue())
    return filename
