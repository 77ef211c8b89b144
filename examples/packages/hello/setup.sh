#!/bin/sh
# Records the installed version where the server finds it (HARNESS_PACKAGE_* are set by the installer).
set -eu
printf '%s\n' "${HARNESS_PACKAGE_VERSION:?}" > www/version.txt
echo "hello: set up ${HARNESS_PACKAGE_NAME:?} ${HARNESS_PACKAGE_VERSION} for ${HARNESS_PACKAGE_DIR:?}"
