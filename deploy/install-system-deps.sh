#!/bin/sh
# Install the Debian packages portpatrol needs (nmap, redis-server) when their binaries are
# missing. As root this uses apt-get; otherwise it names the packages and stops.
set -eu
missing=""
for package in "$@"; do
    case "$package" in
        redis-server) binary=redis-server ;;
        *) binary=$package ;;
    esac
    if ! command -v "$binary" >/dev/null 2>&1 && [ ! -x "/usr/bin/$binary" ] && [ ! -x "/usr/sbin/$binary" ]; then
        missing="$missing $package"
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "portpatrol needs these Debian packages:$missing" >&2
    echo "install them as root:  sudo apt-get install -y$missing" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "portpatrol needs:$missing (no apt-get here: install them with your package manager)" >&2
    exit 1
fi
echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# Debian's redis-server package starts a system service; portpatrol starts its own
# private server, so the system one is left as the package set it up.
