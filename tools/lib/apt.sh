# shellcheck shell=sh
# Sourced by the tools/*install* scripts: Debian package installs that run unattended (no
# prompts, no stdin) as root, or through passwordless sudo otherwise.

# need_root LABEL PACKAGES...: set SUDO ("" as root, "sudo -n" otherwise), or explain and exit 1
# when apt-get is missing or nothing can install as root.
need_root() {
    label=$1
    shift
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$label: apt-get is not available; install $* with your package manager, then re-run." >&2
        exit 1
    fi
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "$label: missing, and installing needs root: run" >&2
        echo "    sudo apt-get install -y --no-install-recommends $*" >&2
        exit 1
    fi
}

# apt_install LABEL PACKAGES...: install PACKAGES (need_root first).
apt_install() {
    label=$1
    shift
    need_root "$label" "$@"
    echo "$label: installing $*"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q </dev/null
    $SUDO apt-get install -y -q --no-install-recommends "$@" </dev/null
}
