#!/usr/bin/env bash
# backup.sh - online backup of a Caxton server (install as /usr/local/bin/backup-caxton.sh).
#
# The server keeps serving: `caxton backup create` asks it for a consistent archive (DuckDB
# database, API-deployed agents, agents_dir, configuration, with a manifest of SHA-256 sums).
# With the server stopped, the archive is made from its files instead.
#
# Usage: backup.sh [--test] [--incremental]
#   --test         also unpack the archive in a temporary folder and check every file
#   --incremental  accepted for the seed's cron line; Caxton always takes a full backup
#
# Environment:
#   BACKUP_DIR          where archives go (default /backups/caxton)
#   RETENTION_DAYS      archives older than this are deleted (default 30)
#   CAXTON              the caxton command (default: caxton on PATH)
#   CAXTON_CONFIG_PATH  the server's caxton.yaml (default /etc/caxton/caxton.yaml if present)
#   CAXTON_URL, CAXTON_API_KEY  as for every caxton command (an admin key with auth on)
set -euo pipefail

usage() {
    echo "Usage: $0 [--test] [--incremental]"
}

BACKUP_DIR="${BACKUP_DIR:-/backups/caxton}"
RETENTION_DAYS="${RETENTION_DAYS:-30}"
CAXTON="${CAXTON:-caxton}"
if [[ -z "${CAXTON_CONFIG_PATH:-}" && -f /etc/caxton/caxton.yaml ]]; then
    export CAXTON_CONFIG_PATH=/etc/caxton/caxton.yaml
fi

RUN_TEST=0
for arg in "$@"; do
    case "$arg" in
        --test) RUN_TEST=1 ;;
        --incremental) echo "note: incremental backups are not supported; taking a full backup" >&2 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "unknown option: $arg" >&2
            usage >&2
            exit 2
            ;;
    esac
done

TIMESTAMP=$(date +%Y%m%d-%H%M%S)
BACKUP_FILE="$BACKUP_DIR/caxton-backup-$TIMESTAMP.tar.gz"

# Create backup directory
mkdir -p "$BACKUP_DIR"

# Create the backup (online: no stop needed)
"$CAXTON" backup create --output "$BACKUP_FILE"

# Verify backup integrity (every file against the manifest's SHA-256)
if "$CAXTON" backup verify "$BACKUP_FILE" >/dev/null; then
    echo "Backup created successfully: $BACKUP_FILE"
else
    echo "Backup verification failed!" >&2
    exit 1
fi

# Cleanup old backups (keep RETENTION_DAYS days)
find "$BACKUP_DIR" -name "caxton-backup-*.tar.gz" -mtime +"$RETENTION_DAYS" -delete

# Test backup (optional): unpack it and check the checksums with standard tools
if [[ "$RUN_TEST" -eq 1 ]]; then
    echo "Testing backup restore..."
    TEMP_DIR=$(mktemp -d)
    trap 'rm -rf "$TEMP_DIR"' EXIT
    tar -xzf "$BACKUP_FILE" -C "$TEMP_DIR"
    (cd "$TEMP_DIR" && sha256sum --check --quiet checksums.sha256)
    echo "Backup test completed successfully"
fi
