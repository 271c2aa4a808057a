#!/usr/bin/env bash
# Head node hook (ParallelCluster OnNodeConfigured): create or update the CloudWatch dashboard
# ParallelCluster-<cluster>-EFA when the cluster starts, as the quick-start guide promises.
#
#   HeadNode:
#     CustomActions:
#       OnNodeConfigured:
#         Sequence:
#           - Script: s3://${S3_BUCKET}/otel-efa/parallelcluster/headnode-create-dashboard.sh
#             Args: [${CLUSTER_NAME}, ${REGION}, p5en.48xlarge, s3://${S3_BUCKET}/otel-efa]
#
# Usage: headnode-create-dashboard.sh [CLUSTER_NAME [REGION [INSTANCE_TYPE [BUNDLE_S3_URI]]]]
#   CLUSTER_NAME, REGION  default to stack_name and cfn_region in /etc/parallelcluster/cfnconfig.
#   INSTANCE_TYPE         the compute nodes' type; its EFA line rate is marked on the graphs. Default:
#                         the first InstanceType under SlurmQueues in the cluster's configuration.
#   BUNDLE_S3_URI         where `otel-efa deploy upload` put the bundle; otel-efa is installed from its
#                         wheel into /opt/otel-efa/venv when it is not on PATH already. Default: two
#                         levels above this hook's Script URI in the cluster's configuration.
# The cluster's configuration is read from $CLUSTER_CONFIG
# (default /opt/parallelcluster/shared/cluster-config.yaml, where ParallelCluster 3 keeps it).
# A dashboard is not worth failing the cluster over: problems are reported and the hook exits 0,
# unless OTEL_EFA_STRICT=1.
set -euo pipefail

CFNCONFIG=${CFNCONFIG:-/etc/parallelcluster/cfnconfig}
CLUSTER_CONFIG=${CLUSTER_CONFIG:-/opt/parallelcluster/shared/cluster-config.yaml}
PREFIX_DIR=${OTEL_EFA_PREFIX:-/opt/otel-efa}

log() { printf '%s headnode-create-dashboard: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

fail() {
    log "$*"
    if [ "${OTEL_EFA_STRICT:-0}" = 1 ]; then exit 1; fi
    exit 0
}

cfn_value() {
    # cfnconfig is KEY=value lines; read it rather than source it.
    [ -r "$CFNCONFIG" ] || return 0
    sed -n "s/^$1=//p" "$CFNCONFIG" | tail -n 1 | tr -d "\"'"
}

compute_instance_type() {
    [ -r "$CLUSTER_CONFIG" ] || return 0
    sed -n '/SlurmQueues:/,$ s/^[[:space:]-]*InstanceType:[[:space:]]*\([A-Za-z0-9.-]*\).*/\1/p' \
        "$CLUSTER_CONFIG" | head -n 1
}

bundle_of_this_hook() {
    [ -r "$CLUSTER_CONFIG" ] || return 0
    local script
    script=$(sed -n 's|^[[:space:]-]*Script:[[:space:]]*\(s3://[^[:space:]]*/headnode-create-dashboard\.sh\).*|\1|p' \
        "$CLUSTER_CONFIG" | head -n 1)
    [ -n "$script" ] && dirname "$(dirname "$script")"
    return 0
}

cluster_name=${1:-$(cfn_value stack_name)}
region=${2:-$(cfn_value cfn_region)}
instance_type=${3:-$(compute_instance_type)}
bundle=${4:-$(bundle_of_this_hook)}

[ -n "$cluster_name" ] || fail "no cluster name (argument 1, or stack_name in $CFNCONFIG)"
[ -n "$region" ] || fail "no region (argument 2, or cfn_region in $CFNCONFIG)"

install_from_bundle() {
    [ -n "$bundle" ] || fail "otel-efa is not installed and no BUNDLE_S3_URI (argument 4) was given"
    command -v aws >/dev/null || fail "the aws CLI is needed to fetch $bundle"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    aws s3 cp --region "$region" "${bundle%/}/SHA256SUMS" "$work/SHA256SUMS" >/dev/null \
        || fail "cannot fetch ${bundle%/}/SHA256SUMS"
    local wheel
    wheel=$(awk '$2 ~ /^otel_efa-.*\.whl$/ {print $2; exit}' "$work/SHA256SUMS")
    [ -n "$wheel" ] || fail "no otel_efa wheel listed in ${bundle%/}/SHA256SUMS"
    aws s3 cp --region "$region" "${bundle%/}/$wheel" "$work/$wheel" >/dev/null \
        || fail "cannot fetch ${bundle%/}/$wheel"
    (cd "$work" && grep -F " $wheel" SHA256SUMS | sha256sum -c --quiet -) \
        || fail "$wheel does not match its checksum"
    python3 -m venv "$PREFIX_DIR/venv" || fail "cannot create $PREFIX_DIR/venv"
    "$PREFIX_DIR/venv/bin/pip" install --quiet --upgrade "$work/$wheel" || fail "cannot install $wheel"
    ln -sf "$PREFIX_DIR/venv/bin/otel-efa" /usr/local/bin/otel-efa
}

if ! command -v otel-efa >/dev/null; then
    log "installing otel-efa from $bundle"
    install_from_bundle
fi

args=(dashboard cloudwatch --cluster-name "$cluster_name" --region "$region")
if [ -n "$instance_type" ]; then args+=(--instance-type "$instance_type"); fi
if [ -r /etc/otel-efa/config.yaml ]; then args+=(--config /etc/otel-efa/config.yaml); fi

if url=$(otel-efa "${args[@]}"); then
    log "dashboard ready: $url"
else
    fail "could not create the dashboard for $cluster_name in $region"
fi
