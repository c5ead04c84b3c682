#!/usr/bin/env bash
# restore.sh - complete restore of a Caxton server (install as /usr/local/bin/restore-caxton.sh).
#
# Checks the archive first (a damaged one stops here, before anything is touched), stops the
# server, runs `caxton backup restore` (the files it replaces are kept in
# <data_dir>/before-restore-<timestamp>/), starts the server again and checks it.
#
# Usage: restore.sh [-y|--yes] [--agents-dir] <backup-file.tar.gz>
#   -y, --yes     do not ask for confirmation
#   --agents-dir  also replace agents_dir's files when they differ from the backup's
#
# Environment:
#   CAXTON              the caxton command (default: caxton on PATH)
#   CAXTON_CONFIG_PATH  the server's caxton.yaml (default /etc/caxton/caxton.yaml if present)
#   CAXTON_STOP_CMD     how to stop the server (default: systemctl stop caxton)
#   CAXTON_START_CMD    how to start it (default: systemctl start caxton)
#   STOP_TIMEOUT        seconds to wait for the server to release data_dir (default 60)
#   HEALTH_TIMEOUT      seconds to wait for the restarted server to be ready (default 60)
set -euo pipefail

usage() {
    echo "Usage: $0 [-y|--yes] [--agents-dir] <backup-file.tar.gz>"
}

CAXTON="${CAXTON:-caxton}"
CAXTON_STOP_CMD="${CAXTON_STOP_CMD:-systemctl stop caxton}"
CAXTON_START_CMD="${CAXTON_START_CMD:-systemctl start caxton}"
STOP_TIMEOUT="${STOP_TIMEOUT:-60}"
HEALTH_TIMEOUT="${HEALTH_TIMEOUT:-60}"
if [[ -z "${CAXTON_CONFIG_PATH:-}" && -f /etc/caxton/caxton.yaml ]]; then
    export CAXTON_CONFIG_PATH=/etc/caxton/caxton.yaml
fi

ASSUME_YES=0
RESTORE_ARGS=()
BACKUP_FILE=""
for arg in "$@"; do
    case "$arg" in
        -y | --yes) ASSUME_YES=1 ;;
        --agents-dir) RESTORE_ARGS+=(--agents-dir) ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*)
            echo "unknown option: $arg" >&2
            usage >&2
            exit 2
            ;;
        *) BACKUP_FILE="$arg" ;;
    esac
done
if [[ -z "$BACKUP_FILE" ]]; then
    usage >&2
    exit 1
fi

# Check the archive before touching anything
"$CAXTON" backup verify "$BACKUP_FILE"

echo "WARNING: this replaces the database and deployed agents of this Caxton server!"
if [[ "$ASSUME_YES" -ne 1 ]]; then
    read -p "Continue? (y/N): " -n 1 -r
    echo
    if [[ ! "${REPLY:-}" =~ ^[Yy]$ ]]; then
        exit 1
    fi
fi

# Stop Caxton, then restore once it has released its data_dir
bash -c "$CAXTON_STOP_CMD"
if ! "$CAXTON" backup restore "$BACKUP_FILE" --wait "$STOP_TIMEOUT" "${RESTORE_ARGS[@]}"; then
    echo "Restore failed; starting Caxton again on its previous data" >&2
    bash -c "$CAXTON_START_CMD"
    exit 1
fi

# Start Caxton and wait until it is ready
bash -c "$CAXTON_START_CMD"
if "$CAXTON" health --timeout "$HEALTH_TIMEOUT"; then
    # Verify database integrity and the agents
    "$CAXTON" storage verify
    "$CAXTON" agents list
    echo "Recovery completed successfully"
else
    echo "Recovery failed - check logs" >&2
    if command -v journalctl >/dev/null 2>&1; then
        journalctl -u caxton -n 50 --no-pager || true
    fi
    exit 1
fi
