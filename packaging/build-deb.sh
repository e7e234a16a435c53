#!/usr/bin/env bash
# Build the sprockets-statsd Debian package from this checkout.
#
#   packaging/build-deb.sh [--output-dir DIR] [--lintian]
#
# What it does:
#   1. copies the checkout's files (tracked and new, not ignored ones) into a
#      temporary directory, so that the build leaves the repository untouched;
#   2. checks the build dependencies of debian/control; when some are missing
#      it installs them with apt-get if run as root, and otherwise stops with
#      the apt-get line to run;
#   3. runs `dpkg-buildpackage -us -uc -b` there, with Debian's own python3
#      first on PATH and any virtualenv, pyenv or PYTHONPATH setting removed:
#      the package is built for, and against, Debian's python3;
#   4. copies the .deb, .buildinfo and .changes into DIR (default: a new
#      temporary directory) and, with --lintian, runs lintian on them.
#
# The build log goes to standard error; the last line on standard output is
# the path of the .deb.  Needs Debian 12 (bookworm) or later.
set -euo pipefail

usage() {
    sed -n '2,20s/^# \{0,1\}//p' "$0" >&2
    exit "${1:-2}"
}

output_dir=''
run_lintian=0
while [ $# -gt 0 ]; do
    case "$1" in
        --output-dir) output_dir=${2:?--output-dir needs a directory}; shift 2 ;;
        --output-dir=*) output_dir=${1#*=}; shift ;;
        --lintian) run_lintian=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "build-deb.sh: unknown argument: $1" >&2; usage ;;
    esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)

# Debian's tools and interpreter only: a virtualenv's or pyenv's python3
# would otherwise be picked up by pybuild and the package built for it.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME PYTHONSTARTUP PYENV_VERSION PIP_REQUIRE_VIRTUALENV
export LC_ALL=C.UTF-8

for tool in dpkg-buildpackage dpkg-checkbuilddeps; do
    if ! command -v "$tool" >/dev/null; then
        echo "build-deb.sh: $tool is missing; install dpkg-dev (apt-get install dpkg-dev)" >&2
        exit 1
    fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/sprockets-statsd-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src="$work/sprockets-statsd"
mkdir "$src"

# The files of the checkout, without .venv, caches or build output.
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh \
        | tar --null --files-from=- -cf -) | tar -xf - -C "$src"
else
    tar -C "$repo" --exclude=.git --exclude='.venv*' --exclude=.tox \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=build --exclude=dist \
        --exclude='.*_cache' --exclude=docs/_build -cf - . | tar -xf - -C "$src"
fi

cd "$src"
if ! missing=$(dpkg-checkbuilddeps 2>&1); then
    # "dpkg-checkbuilddeps: error: Unmet build dependencies: a (>= 1) b" -> a b
    packages=$(printf '%s\n' "$missing" | sed -n 's/.*Unmet build dependencies: //p' \
        | sed -e 's/([^)]*)//g' -e 's/<[^>]*>//g' -e 's/|/ /g' -e 's/:[a-z0-9]*//g')
    if [ -z "$packages" ]; then
        echo "$missing" >&2
        exit 1
    fi
    # Virtual dh-sequence-* packages come with debhelper.
    packages=$(printf '%s\n' $packages | sed 's/^dh-sequence-.*/debhelper/' | sort -u | tr '\n' ' ')
    if [ "$(id -u)" -ne 0 ]; then
        echo "build-deb.sh: missing build dependencies: $packages" >&2
        echo "build-deb.sh: install them as root with:" >&2
        echo "  apt-get install -y --no-install-recommends $packages" >&2
        exit 1
    fi
    echo "build-deb.sh: installing build dependencies: $packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    # shellcheck disable=SC2086
    apt-get install -y --no-install-recommends $packages >&2
fi

echo "build-deb.sh: building in $src with $(python3 --version) ($(command -v python3))" >&2
dpkg-buildpackage -us -uc -b >&2

if [ -z "$output_dir" ]; then
    output_dir=$(mktemp -d "${TMPDIR:-/tmp}/sprockets-statsd-deb-out.XXXXXX")
fi
mkdir -p "$output_dir"
output_dir=$(cd "$output_dir" && pwd)
version=$(dpkg-parsechangelog -S Version)
cp "$work"/*.deb "$work"/*.buildinfo "$work"/*.changes "$output_dir"/
deb="$output_dir/sprockets-statsd_${version}_all.deb"

if [ "$run_lintian" -eq 1 ]; then
    lintian --fail-on error,warning "$output_dir"/*.changes >&2
fi
echo "$deb"
