#!/bin/sh
# The Debian packages `make e2e` runs: chromium (the UI screenshots, driven by Playwright with
# executable_path; Playwright's own browser download is never used), postgresql (the metadata DB
# and the warehouse: its versioned server binaries in /usr/lib/postgresql/*/bin) and redis-server
# (the Celery broker and result backend). Installs only what is missing: as root directly,
# otherwise through sudo. e2e/services.py starts the servers itself (not the packages' systemd units).
set -eu
missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing="$missing redis-server"
if [ -z "$missing" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "e2e: missing Debian packages:$missing; install them (apt-get install$missing)" >&2
    exit 1
fi
echo "e2e: installing Debian packages:$missing"
$SUDO apt-get update -qq
# (Where the packages start their own system-wide servers, on :5432 and :6379, the e2e does not
# use them: it runs throw-away ones on free loopback ports.)
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
[ -x /usr/bin/chromium ] && /usr/bin/chromium --version || true
