#!/bin/sh
# Debian's Chromium for the e2e UI checks (driven by Playwright with executable_path; Playwright's
# own browser download is never used). Installs the `chromium` package when /usr/bin/chromium is
# missing: as root directly, otherwise through sudo.
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "e2e: /usr/bin/chromium is missing; install Debian's chromium package (apt-get install chromium)" >&2
    exit 1
fi
echo "e2e: installing Debian's chromium package"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
/usr/bin/chromium --version
