"""Stage pyauthz's Python code for the Debian package (called by build.sh; offline).

Usage: stage.py REPO LIBDIR INFO_JSON COPYRIGHT

Copies the working tree's ``authz/`` package into LIBDIR (the package's private
/usr/lib/pyauthz/lib) with a small ``.dist-info`` (name, version, entry points: what
``importlib.metadata`` and ``pyauthz --version`` read), and beside it every runtime
dependency that Debian does not provide in a usable version, copied file by file from the
distributions installed for the Python running this script (``python3 -m pip install -e .``
put them there; no network, no wheel cache). Writes INFO_JSON: the Debian dependencies, the
vendored distributions (name, version, licence, licence files), whether compiled code is
carried and the glibc it needs; and COPYRIGHT, the package's machine-readable copyright
file: pyauthz's licence and, for every carried library, its files, copyright lines and the
full licence texts it ships.

Which dependencies come from Debian: a requirement is satisfied by a Debian package only when
that package is in :data:`DEBIAN_PACKAGES` and its version (bookworm's, pinned here) meets
every version range the project and the vendored libraries put on it; otherwise it is
vendored. When pyproject.toml raises a minimum above Debian's, the library is vendored
automatically (and the build says so). A distribution that apt installed and pip kept (it
already met the requirement; it has no file list to copy) becomes a dependency on its Debian
package.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version
except ImportError:  # packaging is a gunicorn dependency; pip carries a copy too
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.version import Version

# PyPI name (normalized) -> (Debian package, the version bookworm ships). Only packages whose
# bookworm version meets pyproject.toml's minimum are candidates; the others are too old there
# (python3-flask 2.2 < 3.0, python3-gunicorn 20.1 < 22, python3-structlog 22.3 < 24.1,
# python3-cryptography 38 < 42, python3-requests 2.28 < 2.31 with urllib3 1.26 < 2.0) or not
# packaged at all (casbin). python3-click 8.1.3 meets click>=8.1 on paper but is carried: the
# suite runs the CLI on click 8.2+ only (8.2 changed flag and CliRunner behaviour), and
# installing it on a CI machine before pip would hand the whole suite that older click.
DEBIAN_PACKAGES = {
    "pyyaml": ("python3-yaml", "6.0"),
}

# Never imported, yet in some released wheels (casbin 1.43's carries an npm tree with gyp).
STRAY_TOP_LEVEL = {"node_modules", "__pycache__", "tests", "test", "docs"}

# Certificates: the vendored certifi's bundle is replaced by Debian's (updated by
# ca-certificates, as Debian's python3-certifi does).
DEBIAN_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project(repo: Path) -> dict:
    data = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    if "version" not in data:  # dynamic: ask the package itself
        sys.path.insert(0, str(repo))
        import authz

        data["version"] = authz.__version__
    return data


def debian_owner(dist: md.Distribution) -> tuple[str, str] | None:
    """(Debian package, upstream version) when apt installed this distribution (it has no
    RECORD to copy from, and Debian keeps it up to date): pip leaves such a copy in
    /usr/lib/python3/dist-packages when its version already meets the requirement."""
    path = getattr(dist, "_path", None)
    if path is None or not str(path).startswith("/usr/lib/python3/"):
        return None
    found = subprocess.run(["dpkg-query", "-S", str(path)], capture_output=True, text=True)
    if found.returncode != 0:
        return None
    package = found.stdout.split(":", 1)[0].strip()
    return package, dist.version


def resolve(requirements: list[str]) -> tuple[dict, dict[str, list[str]]]:
    """The runtime closure: {canonical name: Distribution} to vendor, and {canonical name:
    [specifiers]} met by Debian packages."""
    env = default_environment()
    env["extra"] = ""
    vendored: dict[str, md.Distribution] = {}
    debian: dict[str, list[str]] = {}
    specs: dict[str, list[str]] = {}
    pending = [Requirement(r) for r in requirements]
    while pending:
        req = pending.pop(0)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canon(req.name)
        specs.setdefault(name, []).append(str(req.specifier))
        if name in vendored:
            continue
        if name in DEBIAN_PACKAGES:
            deb_version = Version(DEBIAN_PACKAGES[name][1])
            if all(deb_version in SpecifierSet(s) for s in specs[name]):
                debian[name] = specs[name]
                continue
            print(f"stage: Debian's {DEBIAN_PACKAGES[name][0]} {deb_version} does not meet "
                  f"{name}{','.join(specs[name])}: vendoring it", file=sys.stderr)
            debian.pop(name, None)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            sys.exit(f"stage: {req.name} is not installed for {sys.executable}; "
                     "run `python3 -m pip install -e .` first (the build is offline)")
        if not req.specifier.contains(Version(dist.version), prereleases=True):
            sys.exit(f"stage: installed {dist.metadata['Name']} {dist.version} does not meet "
                     f"{req}; reinstall the project's dependencies")
        owner = debian_owner(dist)
        if owner is not None:  # pip kept a Debian package's copy: depend on that package
            DEBIAN_PACKAGES[name] = owner
            debian[name] = specs[name]
            continue
        vendored[name] = dist
        pending.extend(Requirement(r) for r in dist.requires or [])
    # A Debian-provided name that a later requirement pushed out of range was vendored above.
    for name in list(debian):
        if name in vendored:
            debian.pop(name)
    return vendored, {n: specs[n] for n in debian}


def copy_distribution(dist: md.Distribution, lib: Path) -> dict:
    """Copy the files the distribution installed into site-packages (not scripts, not
    bytecode, not pip's bookkeeping). Returns what the copyright file and the docs need."""
    name = dist.metadata["Name"]
    if dist.files is None:
        sys.exit(f"stage: {name} {dist.version} has no RECORD (not installed by pip): cannot "
                 "tell its files; reinstall it with pip")
    has_so = False
    glibc = (2, 17)
    licences: list[str] = []
    for f in dist.files or []:
        rel = f.as_posix()
        if rel.startswith("..") or rel.startswith("/") or "__pycache__" in rel or rel.endswith(".pyc"):
            continue
        parts = rel.split("/")
        if parts[0] in STRAY_TOP_LEVEL:
            continue
        if parts[0].endswith(".dist-info") and parts[-1] in (
                "RECORD", "INSTALLER", "REQUESTED", "direct_url.json"):
            continue
        src = Path(f.locate())
        if not src.is_file():
            continue
        dst = lib / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        os.chmod(dst, 0o755 if os.access(src, os.X_OK) and rel.endswith(".so") else 0o644)
        if ".so" in parts[-1]:
            has_so = True
        if parts[0].endswith(".dist-info") and re.search(r"(LICEN[CS]E|COPYING|NOTICE)", parts[-1], re.I):
            licences.append(rel)
    for line in (dist.read_text("WHEEL") or "").splitlines():
        m = re.match(r"Tag:.*manylinux_(\d+)_(\d+)_", line)
        if m:
            glibc = max(glibc, (int(m[1]), int(m[2])))
    info_dirs = {Path(str(f)).parts[0] for f in dist.files or [] if ".dist-info/" in str(f)}
    for info in info_dirs:
        if (lib / info).is_dir():
            (lib / info / "INSTALLER").write_text("pyauthz-deb\n")
    meta = dist.metadata
    licence = (meta.get("License-Expression") or "").strip()
    if not licence:
        short = (meta.get("License") or "").strip()
        licence = short if short and "\n" not in short and len(short) < 60 else ""
    if not licence:
        classifiers = [c.rsplit("::", 1)[-1].strip() for c in meta.get_all("Classifier") or []
                       if c.startswith("License ::")]
        licence = " or ".join(classifiers) or "see the licence files"
    return {"name": name, "version": dist.version, "licence": licence, "licence_files": licences,
            "compiled": has_so, "glibc": ".".join(map(str, glibc)) if has_so else None,
            "top_level": sorted({Path(str(f)).parts[0] for f in dist.files or []
                                 if not str(f).startswith("..")} - STRAY_TOP_LEVEL)}


def copy_project(repo: Path, lib: Path, proj: dict) -> None:
    def ignore(directory, names):
        return [n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))]

    shutil.copytree(repo / "authz", lib / "authz", ignore=ignore, symlinks=False)
    info = lib / f"{re.sub(r'[-.]+', '_', proj['name'])}-{proj['version']}.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {proj['name']}", f"Version: {proj['version']}",
             f"Summary: {proj.get('description', '')}"]
    lic = proj.get("license")
    if isinstance(lic, dict) and lic.get("text"):
        lines.append(f"License: {lic['text']}")
    elif isinstance(lic, str):
        lines.append(f"License-Expression: {lic}")
    lines += [f"Requires-Dist: {r}" for r in proj.get("dependencies", [])]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    scripts = proj.get("scripts", {})
    (info / "entry_points.txt").write_text(
        "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items()))
    (info / "top_level.txt").write_text("authz\n")
    (info / "INSTALLER").write_text("pyauthz-deb\n")


def _field_text(text: str) -> str:
    """A multi-line deb822 field value: each line indented, empty lines as ' .'."""
    return "\n".join(" " + line.rstrip() if line.strip() else " ." for line in text.strip("\n").splitlines())


def write_copyright(path: Path, repo: Path, lib: Path, proj: dict, carried: list[dict]) -> None:
    licence = proj.get("license")
    licence = licence.get("text", "") if isinstance(licence, dict) else (licence or "")
    paras = ["Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
             "Upstream-Name: pyauthz\n"
             f"Comment: pyauthz's Python distribution is named {proj['name']}.\n"
             " Files under usr/lib/pyauthz/lib/ other than authz/ belong to libraries\n"
             " carried with pyauthz (Debian does not ship them in a version it can use),\n"
             " copied unchanged from their released wheels; their licences follow."]
    text = ""
    for name in ("LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING"):
        if (repo / name).is_file():
            text = (repo / name).read_text(errors="replace")
            break
    if licence.replace(" ", "-").lower() in ("apache-2.0", "apache-2"):
        body = ("On Debian systems, the full text of the Apache License, Version 2.0 is in\n"
                "/usr/share/common-licenses/Apache-2.0.")
        licence = "Apache-2.0"
    else:
        body = text or "See the project's licence."
    paras.append(f"Files: *\nCopyright: the pyauthz authors\nLicense: {licence or 'unknown'}\n"
                 + _field_text(body))
    for c in carried:
        texts = [(lib / f).read_text(errors="replace") for f in c["licence_files"]]
        holders = sorted({line.strip() for t in texts for line in t.splitlines()
                          if re.match(r"\s*(Copyright\s*(\(c\)|©)?\s*\d|©\s*\d)", line, re.I)})
        files = " ".join(f"usr/lib/pyauthz/lib/{t}/*" if (lib / t).is_dir() else
                         f"usr/lib/pyauthz/lib/{t} usr/lib/pyauthz/lib/__pycache__/{t[:-3]}.*"
                         if t.endswith(".py") else f"usr/lib/pyauthz/lib/{t}"
                         for t in c["top_level"])
        copyright_ = "\n".join(" " + h for h in holders).lstrip() if holders else \
            f"the {c['name']} authors (see the licence text)"
        body = "\n\n".join(texts) or f"{c['licence']}; see the library's metadata in usr/lib/pyauthz/lib."
        paras.append(f"Files: {files}\nCopyright: {copyright_}\n"
                     f"Comment: {c['name']} {c['version']}\nLicense: {c['licence']}\n" + _field_text(body))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(paras) + "\n")


def main() -> None:
    repo, lib, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    proj = project(repo)
    vendored, debian = resolve(list(proj.get("dependencies", [])))
    lib.mkdir(parents=True, exist_ok=True)
    copy_project(repo, lib, proj)
    carried = [copy_distribution(d, lib) for _, d in sorted(vendored.items())]
    depends = []
    for name, spec in sorted(debian.items()):
        deb, version = DEBIAN_PACKAGES[name]
        minimum = max((Version(m[1]) for s in spec for m in re.finditer(r">=\s*([\w.]+)", s)),
                      default=None)
        depends.append(f"{deb} (>= {minimum})" if minimum else deb)
    certifi = lib / "certifi" / "cacert.pem"
    if certifi.exists():
        certifi.unlink()
        certifi.symlink_to(DEBIAN_CA_BUNDLE)
        depends.append("ca-certificates")
    write_copyright(Path(sys.argv[4]), repo, lib, proj, carried)
    compiled = [c for c in carried if c["compiled"]]
    glibc = max((tuple(map(int, c["glibc"].split("."))) for c in compiled), default=None)
    out.write_text(json.dumps({
        "name": proj["name"], "version": proj["version"],
        "description": proj.get("description", ""),
        "licence": (proj.get("license") or {}).get("text", "") if isinstance(proj.get("license"), dict)
        else proj.get("license", ""),
        "scripts": proj.get("scripts", {}),
        "debian_depends": depends, "vendored": carried,
        "compiled": bool(compiled), "glibc": ".".join(map(str, glibc)) if glibc else None,
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
    }, indent=2))
    for c in carried:
        print(f"stage: vendored {c['name']} {c['version']} ({c['licence']})", file=sys.stderr)
    for d in depends:
        print(f"stage: from Debian: {d}", file=sys.stderr)


if __name__ == "__main__":
    main()
