#!/bin/sh
# Install the operations tools the packaging and monitoring tests run for real: Prometheus and
# promtool (Debian package `prometheus`), logrotate, docker-compose (which validates
# packaging/docker-compose.yml without a Docker engine), and nginx (run on loopback in front of
# two instances with packaging/nginx/caxton.conf), and chromium with chromium-driver (the
# console's browser tests drive it through selenium; no browser is downloaded). Debian packages
# only.
#
# Idempotent: when every tool is already on PATH, nothing is installed. Runs unattended
# (no prompts, no stdin) as root, or through passwordless sudo otherwise. The Debian package's
# own service is never started here (policy-rc.d refuses it while installing): the tests run
# their own Prometheus on 127.0.0.1.
#
# Environment: APT_PACKAGES (default: "prometheus logrotate docker-compose nginx chromium
# chromium-driver") the packages to install.
set -eu
# shellcheck source-path=SCRIPTDIR source=lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"

APT_PACKAGES="${APT_PACKAGES:-prometheus logrotate docker-compose nginx chromium chromium-driver}"
PATH="$PATH:/usr/sbin:/sbin"

have_tools() {
    for tool in prometheus promtool logrotate docker-compose nginx chromium chromedriver; do
        command -v "$tool" >/dev/null 2>&1 || return 1
    done
    return 0
}

if have_tools; then
    echo "ops tools: $(prometheus --version 2>&1 | head -n 1), $(logrotate --version 2>&1 | head -n 1) (already installed)"
    exit 0
fi

# shellcheck disable=SC2086  # the package list is meant to split into words
need_root "ops tools" $APT_PACKAGES
# Keep the package's service from starting (there may be no init system at all): exit code 101
# tells invoke-rc.d the action is forbidden. Removed again whatever happens.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    own_policy=1
fi
cleanup() {
    if [ "$own_policy" -eq 1 ]; then
        $SUDO rm -f "$policy"
    fi
}
trap cleanup EXIT
# shellcheck disable=SC2086  # the package list is meant to split into words
apt_install "ops tools" $APT_PACKAGES

if ! have_tools; then
    echo "ops tools: $APT_PACKAGES installed, but a tool is still missing from PATH" >&2
    exit 1
fi
echo "ops tools: $(prometheus --version 2>&1 | head -n 1) ready"
