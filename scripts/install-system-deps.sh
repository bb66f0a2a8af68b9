#!/usr/bin/env bash
# System packages the project needs beyond Python. Usage:
#   scripts/install-system-deps.sh fonts   # a CJK font for word clouds and plots (make setup)
#   scripts/install-system-deps.sh ci      # everything the integration tests use (.ci/run)
# Installs with apt-get only when run as root on Debian/Ubuntu; otherwise prints what to install.
set -euo pipefail
what="${1:-fonts}"

have_cjk_font() {
  command -v fc-list >/dev/null 2>&1 && fc-list :lang=zh 2>/dev/null | grep -q . && return 0
  ls /usr/share/fonts/truetype/wqy/*.tt[cf] /usr/share/fonts/opentype/noto/NotoSansCJK* >/dev/null 2>&1
}

packages=()
case "$what" in
  fonts) have_cjk_font || packages+=(fonts-wqy-microhei) ;;
  # ci: font for word clouds; nginx (proxy test), chromium (demo-page test), postgresql (storage tests).
  ci)    packages+=(fonts-wqy-microhei nginx chromium chromium-driver postgresql) ;;
  *) echo "usage: $0 fonts|ci" >&2; exit 2 ;;
esac
[ ${#packages[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  missing=()
  for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "Please install these system packages (needs root): ${packages[*]}" >&2
  echo "  e.g. sudo apt-get install ${packages[*]}   — or set FONT_PATH to a CJK font." >&2
fi
