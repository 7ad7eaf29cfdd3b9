# Source this, then: need COMMAND:PACKAGE ... — installs, with apt-get, the
# Debian packages of the commands that are missing (one apt-get run).
# need_py MODULE:PACKAGE ... does the same for Python modules of python3.
need() { install_missing has_command "$@"; }
need_py() { install_missing has_py_module "$@"; }

has_command() { command -v "$1" >/dev/null 2>&1; }
has_py_module() { python3 -c "import $1" >/dev/null 2>&1; }

# install_missing CHECK NAME:PACKAGE ...: the packages whose NAME fails CHECK.
install_missing() {
  local check=$1 missing=() pair
  shift
  for pair in "$@"; do
    "$check" "${pair%%:*}" || missing+=("${pair#*:}")
  done
  apt_install "${missing[@]}"
}

apt_install() {
  [ $# -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
