#!/usr/bin/env bash
# Install the Debian packages a single-node Slurm cluster with accounting needs (see slurm/cluster.sh).
#
# Idempotent: packages already installed are left alone, and nothing runs at all when every one is there.
# Needs root (or sudo) and Debian/Ubuntu. Package postinst scripts may be blocked from starting daemons
# (policy-rc.d); that is fine, because slurm/cluster.sh starts every daemon itself.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
    echo "slurm/install.sh: all packages already installed (${PACKAGES[*]})"
    exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || {
        echo "slurm/install.sh: must run as root (or with sudo available) to install: ${missing[*]}" >&2
        exit 1
    }
    SUDO=(sudo)
fi

echo "slurm/install.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

# The munge postinst normally creates the key; create one if it did not (e.g. a minimal image).
if [[ ! -s /etc/munge/munge.key ]]; then
    "${SUDO[@]}" mungekey --create --keyfile=/etc/munge/munge.key
    "${SUDO[@]}" chown munge:munge /etc/munge/munge.key
    "${SUDO[@]}" chmod 0400 /etc/munge/munge.key
fi
echo "slurm/install.sh: done"
