#!/usr/bin/env bash
# Build the pyauthz Debian package from this checkout, offline, with dpkg-deb:
#   packaging/deb/build.sh            -> dist/pyauthz_VERSION-1_ARCH.deb
# (as any user: dpkg-deb --root-owner-group makes every file root's; OUT_DIR=... elsewhere).
#
# What goes in, and why:
#   /usr/bin/pyauthz            the command: `/usr/bin/python3 -I -S`, then the private
#                               library directory first and Debian's dist-packages last on
#                               sys.path. -I -S keep PYTHONPATH, the user site and
#                               /usr/local's pip installs (an editable checkout, say) out: the
#                               package's code can neither shadow nor be shadowed by them.
#   /usr/lib/pyauthz/lib/       pyauthz's own code (the working tree's authz/, with a small
#                               .dist-info) and the runtime libraries Debian does not provide
#                               in a version pyproject.toml accepts, byte-compiled here
#                               (bytecode is shipped, so nothing is written there at run time
#                               and a purge leaves nothing behind).
#   /etc/pyauthz/policies/      the shipped default policy (the repo's policies/, read through
#                               a symlink if it is one), every file a conffile.
#   /lib/systemd/system/        packaging/systemd/pyauthz.{socket,service}, ExecStart (and
#                               the other Exec lines) rewritten to /usr/bin/pyauthz.
#   /usr/share/man/man8/        pyauthz(8), its COMMANDS section generated from the click
#                               command tree being packaged (packaging/deb/manpage.py).
#   /usr/share/doc/pyauthz/     copyright (pyauthz and every carried library, with their
#                               licence texts), changelog.Debian, README and docs.
#
# Dependencies: Debian's packages where bookworm's version meets pyproject.toml (python3,
# python3-yaml; ca-certificates for the CA bundle); everything else is carried, copied from the
# distributions installed for $PYTHON (python3 -m pip install -e . put them there: no
# network, no wheel cache). Bookworm's python3-flask 2.2, python3-gunicorn 20.1,
# python3-structlog 22.3, python3-cryptography 38 and python3-requests 2.28 (urllib3 1.26) are
# older than the minimums pyproject.toml states, casbin is not packaged, and python3-click
# 8.1.3 is older than the click the test suite runs the CLI on (see stage.py).
# packaging/deb/stage.py decides, vendors a library automatically when pyproject.toml raises it
# above Debian's version, and turns a dependency that apt installed and pip kept into a
# Depends. The carried certifi uses Debian's CA bundle. Carried wheels with compiled code
# (cryptography with its own OpenSSL, cffi, markupsafe, charset-normalizer) tie the package to
# this architecture, CPython 3.11 and a minimum glibc; their security fixes come with a
# rebuild of this package, not from Debian.
#
# Needs: dpkg-deb, /usr/bin/python3 (the target interpreter), $PYTHON (default python3) of the
# same minor version with the project's dependencies installed, and the systemd units of
# packaging/systemd/. Takes a few seconds.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$REPO/packaging/deb
PYTHON=${PYTHON:-python3}
TARGET_PYTHON=/usr/bin/python3
OUT_DIR=${OUT_DIR:-$REPO/dist}
UNIT_DIR=${UNIT_DIR:-$REPO/packaging/systemd}
MAINTAINER=${DEB_MAINTAINER:-pyauthz maintainers <root@localhost>}

die() { echo "packaging/deb/build.sh: $*" >&2; exit 1; }

command -v dpkg-deb >/dev/null || die "dpkg-deb not found (apt-get install dpkg)"
[ -x "$TARGET_PYTHON" ] || die "$TARGET_PYTHON not found: the package runs on Debian's python3"
py_build=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
    || die "$PYTHON does not run"
py_target=$("$TARGET_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$py_build" = "$py_target" ] || die "$PYTHON is Python $py_build but $TARGET_PYTHON is \
$py_target: the carried libraries (some compiled) must come from a Python $py_target \
(PYTHON=/path/to/python$py_target $0)"
for unit in pyauthz.service pyauthz.socket; do
    [ -f "$UNIT_DIR/$unit" ] || die "missing $UNIT_DIR/$unit (the systemd units of issue 10, \
item 2): the package installs them and cannot be built without them"
done
POLICY_SRC=$REPO/policies
[ -f "$POLICY_SRC/rules.yaml" ] || die "no shipped policy at $POLICY_SRC (rules.yaml missing)"

work=$(mktemp -d "${TMPDIR:-/tmp}/pyauthz-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
lib=$root/usr/lib/pyauthz/lib
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)}

# ---- Python code: pyauthz and the libraries it carries
"$PYTHON" "$HERE/stage.py" "$REPO" "$lib" "$work/info.json" "$root/usr/share/doc/pyauthz/copyright"
info() { "$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, d))' \
    "$work/info.json" "$1"; }
version=$(info version)
scripts=$(info '" ".join(scripts)')
[ "$scripts" = pyauthz ] || die "pyproject.toml's [project.scripts] is '$scripts', expected pyauthz"
entry=$(info 'scripts["pyauthz"]')
# PEP 440 -> Debian: 1.0rc1 sorts before 1.0 with a tilde.
deb_version=$(printf '%s' "$version" | sed -E 's/\.?(a|b|rc|dev)([0-9]*)/~\1\2/; s/\+/+local./')-1

# ---- the command
install -d -m 0755 "$root/usr/bin"
cat > "$root/usr/bin/pyauthz" <<EOF
#!$TARGET_PYTHON -IS
# pyauthz $version, from the Debian package. -I -S: no PYTHONPATH, no user site, no
# /usr/local site-packages; pyauthz's code and the libraries it carries come from
# /usr/lib/pyauthz/lib, the rest from Debian's python3 packages.
import sys

sys.dont_write_bytecode = True
sys.path[:0] = ["/usr/lib/pyauthz/lib"]
sys.path.append("/usr/lib/python3/dist-packages")
from ${entry%%:*} import ${entry##*:}

sys.exit(${entry##*:}())
EOF
chmod 0755 "$root/usr/bin/pyauthz"

# ---- the default policy, as conffiles
install -d -m 0755 "$root/etc/pyauthz"
cp -rL "$POLICY_SRC/." "$root/etc/pyauthz/policies"
find "$root/etc/pyauthz" \( -name __pycache__ -o -name '*.pyc' -o -name '*~' -o -name '.*.sw?' \) \
    -prune -exec rm -rf {} +
find "$root/etc/pyauthz" -type d -exec chmod 0755 {} +
find "$root/etc/pyauthz" -type f -exec chmod 0644 {} +

# ---- systemd units: Exec lines that run pyauthz (a checkout's or venv's path, `python3 -m
# authz`) run /usr/bin/pyauthz instead.
install -d -m 0755 "$root/lib/systemd/system"
for unit in pyauthz.service pyauthz.socket; do
    sed -E \
        -e 's#^(Exec[A-Za-z]*=[-@:+!]*)[^[:space:]]*python3?(\.[0-9]+)?[[:space:]]+-m[[:space:]]+authz([[:space:]]|$)#\1/usr/bin/pyauthz\3#' \
        -e 's#^(Exec[A-Za-z]*=[-@:+!]*)[^[:space:]]*/pyauthz([[:space:]]|$)#\1/usr/bin/pyauthz\2#' \
        "$UNIT_DIR/$unit" > "$root/lib/systemd/system/$unit"
    chmod 0644 "$root/lib/systemd/system/$unit"
done
bad=$(grep -E '^Exec' "$root/lib/systemd/system/pyauthz.service" | grep -vE '=[-@:+!]*(/usr/bin/pyauthz|/bin/kill)([[:space:]]|$)' || true)
[ -z "$bad" ] || die "unit Exec lines not rewritten to /usr/bin/pyauthz:
$bad"
grep -qE '^ExecStart=[-@:+!]*/usr/bin/pyauthz serve' "$root/lib/systemd/system/pyauthz.service" \
    || die "pyauthz.service has no ExecStart=/usr/bin/pyauthz serve after the rewrite"

# ---- man page and docs
install -d -m 0755 "$root/usr/share/man/man8" "$root/usr/share/doc/pyauthz"
"$PYTHON" "$HERE/manpage.py" "$lib" "$version" "$work/pyauthz.8"
gzip -9n < "$work/pyauthz.8" > "$root/usr/share/man/man8/pyauthz.8.gz"
for doc in README.md CHANGELOG.md docs/*.md; do
    [ -f "$REPO/$doc" ] && install -m 0644 "$REPO/$doc" "$root/usr/share/doc/pyauthz/$(basename "$doc")"
done
rev=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)
{
    printf 'pyauthz (%s) unstable; urgency=medium\n\n' "$deb_version"
    printf '  * Built by packaging/deb/build.sh from pyauthz %s (git %s).\n\n' "$version" "$rev"
    printf ' -- %s  %s\n' "$MAINTAINER" "$(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$root/usr/share/doc/pyauthz/changelog.Debian.gz"

# ---- bytecode, compiled by the target interpreter (hash-based and unchecked: valid whatever
# the files' mtimes; a new package replaces sources and bytecode together).
"$TARGET_PYTHON" -m compileall -q -j0 --invalidation-mode unchecked-hash -s "$root" -p / "$lib" >/dev/null \
    || die "byte-compiling with $TARGET_PYTHON failed"
find "$root" -type d -exec chmod 0755 {} +

# ---- control
compiled=$(info 'compiled')
if [ "$compiled" = True ]; then
    arch=$(dpkg --print-architecture)
    depends="python3 (>= $py_target), python3 (<< ${py_target%.*}.$(( ${py_target#*.} + 1 ))), libc6 (>= $(info glibc))"
else
    arch=all
    depends="python3 (>= $py_target)"
fi
extra=$(info '", ".join(debian_depends)')
[ -n "$extra" ] && depends="$depends, $extra"
install -d -m 0755 "$root/DEBIAN"
(cd "$root" && find etc -type f | sort | sed 's#^#/#') > "$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$HERE/$script" "$root/DEBIAN/$script"
done
vendored=$(info '", ".join(v["name"] + " " + v["version"] for v in vendored)')
description=$(info 'description')
cat > "$root/DEBIAN/control" <<EOF
Package: pyauthz
Version: $deb_version
Architecture: $arch
Maintainer: $MAINTAINER
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends
Recommends: docker.io | docker-ce
Section: admin
Priority: optional
Description: Docker Engine authorization plugin with Casbin policies
 $description.
 .
 pyauthz answers dockerd's authorization requests (dockerd
 --authorization-plugin=pyauthz): it denies privileged containers, host
 namespaces, host paths outside the policy's bind roots and unsigned images,
 fails closed, and logs every decision as a JSON line. systemd starts it
 through pyauthz.socket before docker.service.
 .
 Carried in /usr/lib/pyauthz/lib: $vendored.
EOF
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's#^\./##' | sort \
    | xargs -d '\n' md5sum) > "$root/DEBIAN/md5sums"

# ---- the package
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/pyauthz_*.deb
deb=$OUT_DIR/pyauthz_${deb_version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz -z3 --build "$root" "$deb" >/dev/null
echo "$deb"
