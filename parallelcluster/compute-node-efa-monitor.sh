#!/bin/bash
# ParallelCluster OnNodeConfigured script for compute nodes: installs and starts the efa-monitor
# service (the otel-efa agent) on EFA-capable GPU nodes.
#
#   compute-node-efa-monitor.sh CLUSTER_NAME REGION S3_BUCKET [MONITORING_TYPE] [SETUP_TYPE]
#                               [AMP_REMOTE_WRITE_URL] [--amp-url URL] [--root DIR]
#
# The first five arguments are the quick-start's: MONITORING_TYPE is none | cloudwatch (default) |
# self-hosting | amp-only | amp+amg; SETUP_TYPE is gpu (default) or cpu. An empty CLUSTER_NAME or REGION
# ("") is read from ParallelCluster's /etc/parallelcluster/cfnconfig (stack_name, cfn_region).
# AMP_REMOTE_WRITE_URL (or --amp-url) is the AMP workspace's remote write URL, needed by amp-only and
# amp+amg. Nothing is installed unless SETUP_TYPE is gpu and the node has EFA devices: then the script
# says why and exits 0, so the node still boots.
#
# It installs from the bundle `otel-efa deploy upload` put under s3://S3_BUCKET/S3_PREFIX/ (layout:
# docs/operations.md), synced to /opt/otel-efa/bundle and checked against its SHA256SUMS: the agent
# wheel into its own venv built with the node's Python (3.9+), /etc/otel-efa/config.yaml for the
# monitoring type, the systemd unit and a drop-in with region and cluster name (OTEL_EFA_CLUSTER_NAME),
# the logrotate rule, the efa-monitor system user, and ADOT (adot/install-adot.sh --mode amp) when the
# monitoring type sends OTLP. Then it enables and starts the service.
# Running it again changes nothing unless the bundle changed (then it restarts the service once).
#
# Environment (all optional):
#   ROOT=DIR         install under DIR instead of / (an image, or a test's fake root); --root DIR too.
#                    The unit is then only enabled (systemctl --root), nothing is started on this host,
#                    unless SYSTEMCTL is set.
#   SYSTEMCTL=CMD    the systemctl to manage the running services with (default systemctl); passed on to
#                    install-adot.sh
#   BUNDLE=DIR       use this bundle directory as is (e.g. on /fsx) instead of syncing it from S3
#   S3_PREFIX=P      bundle prefix in the bucket (default otel-efa)
#   PYTHON=PATH      the Python to build the venv with (default: the newest python3.x >= 3.9 on PATH)
#   SYSFS=DIR        where to look for EFA devices (default $ROOT/sys)
#   AWS_EC2_METADATA_SERVICE_ENDPOINT  IMDS address (default http://169.254.169.254)
set -euo pipefail

usage() {
    echo "usage: $0 CLUSTER_NAME REGION S3_BUCKET [MONITORING_TYPE] [SETUP_TYPE] [AMP_REMOTE_WRITE_URL] [--amp-url URL] [--root DIR]" >&2
    exit 2
}

log() { echo "efa-monitor setup: $*"; }
die() { echo "efa-monitor setup: error: $*" >&2; exit "${2:-1}"; }

args=()
AMP_URL=""
while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || usage; ROOT="$2"; shift 2 ;;
        --root=*) ROOT="${1#--root=}"; shift ;;
        --amp-url) [ $# -ge 2 ] || usage; AMP_URL="$2"; shift 2 ;;
        --amp-url=*) AMP_URL="${1#--amp-url=}"; shift ;;
        -h|--help) usage ;;
        *) args+=("$1"); shift ;;
    esac
done
if [ "${#args[@]}" -lt 3 ] || [ "${#args[@]}" -gt 6 ]; then
    usage
fi
CLUSTER_NAME="${args[0]}"
REGION="${args[1]}"
S3_BUCKET="${args[2]}"
MONITORING_TYPE="${args[3]:-cloudwatch}"
SETUP_TYPE="${args[4]:-gpu}"
AMP_URL="${AMP_URL:-${args[5]:-}}"

ROOT="${ROOT:-}"
ROOT="${ROOT%/}"

# ParallelCluster's node settings, for what the arguments leave empty. The cookbook
# (aws-parallelcluster-cookbook, recipe aws-parallelcluster-environment::cfnconfig_mixed, template
# init/cfnconfig.erb) writes /etc/parallelcluster/cfnconfig as shell variables during the node's init
# phase, before OnNodeConfigured runs: stack_name (the cluster name), cfn_region, cfn_node_type. AWS's
# "Custom bootstrap actions" page says these internal variables are unsupported and may go away, so the
# arguments come first and the file is only the fallback.
CFNCONFIG="$ROOT/etc/parallelcluster/cfnconfig"
cfnconfig_value() {  # cfnconfig_value NAME -> its value, or nothing
    if [ -f "$CFNCONFIG" ]; then sed -n "s/^$1=//p" "$CFNCONFIG" | tr -d "\"'" | tail -n 1; fi
}
if [ -z "$CLUSTER_NAME" ]; then CLUSTER_NAME=$(cfnconfig_value stack_name); fi
if [ -z "$REGION" ]; then REGION=$(cfnconfig_value cfn_region); fi
[ -n "$CLUSTER_NAME" ] || die "CLUSTER_NAME (1st argument) is empty and /etc/parallelcluster/cfnconfig has no stack_name" 2
[ -n "$REGION" ] || die "REGION (2nd argument) is empty and /etc/parallelcluster/cfnconfig has no cfn_region" 2
S3_PREFIX="${S3_PREFIX:-otel-efa}"
SYSFS="${SYSFS:-$ROOT/sys}"
IMDS="${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}"
IMDS="${IMDS%/}"
PREFIX="$ROOT/opt/otel-efa"
VENV="$PREFIX/venv"
BUNDLE="${BUNDLE:-$PREFIX/bundle}"
UNIT=efa-monitor.service
UNIT_DIR="$ROOT/etc/systemd/system"

# The exporters each monitoring type uses (the "exporters:" line of /etc/otel-efa/config.yaml) and
# whether it needs the ADOT collector on the node.
case "$MONITORING_TYPE" in
    none) EXPORTERS="prometheus, log"; NEEDS_ADOT=no ;;
    cloudwatch|self-hosting) EXPORTERS="cloudwatch, prometheus, log"; NEEDS_ADOT=no ;;
    amp-only|amp+amg) EXPORTERS="otlp, cloudwatch, log"; NEEDS_ADOT=yes ;;
    *) die "MONITORING_TYPE (4th argument): unknown '$MONITORING_TYPE'; use none, cloudwatch, self-hosting, amp-only or amp+amg" 2 ;;
esac
if [ "$NEEDS_ADOT" = yes ] && [ -z "$AMP_URL" ]; then
    die "MONITORING_TYPE $MONITORING_TYPE needs the AMP workspace's remote write URL: give it as the 6th argument (AMP_REMOTE_WRITE_URL) or --amp-url URL" 2
fi

# --- Is this a node for us? ------------------------------------------------------------------------
imds_get() {  # imds_get PATH -> the value, or nothing off EC2
    local token
    token=$(curl -sf --max-time 2 -X PUT "$IMDS/latest/api/token" \
        -H "X-aws-ec2-metadata-token-ttl-seconds: 60" 2>/dev/null) || return 0
    curl -sf --max-time 2 -H "X-aws-ec2-metadata-token: $token" "$IMDS/latest/$1" 2>/dev/null || true
}

if [ "$SETUP_TYPE" != gpu ]; then
    log "setup type is '$SETUP_TYPE', not 'gpu': the EFA monitor is for GPU nodes; nothing to do"
    exit 0
fi
INSTANCE_TYPE=$(imds_get meta-data/instance-type)
efa_devices=0
if [ -d "$SYSFS/class/infiniband" ]; then
    efa_devices=$(find "$SYSFS/class/infiniband" -mindepth 1 -maxdepth 1 | wc -l)
fi
if [ "$efa_devices" -eq 0 ]; then
    case "${INSTANCE_TYPE:-}" in
        p4d.*|p5.*|p5e.*|p5en.*|p6-*|trn1.*|trn1n.*|trn2.*)
            log "$INSTANCE_TYPE supports EFA but $SYSFS/class/infiniband has no device:" \
                "set 'Efa: Enabled: true' on the compute resource; nothing to do" ;;
        *)
            log "no EFA devices under $SYSFS/class/infiniband (instance type ${INSTANCE_TYPE:-unknown}); nothing to do" ;;
    esac
    exit 0
fi
log "${INSTANCE_TYPE:-this node} has $efa_devices EFA device(s); cluster $CLUSTER_NAME, region $REGION," \
    "monitoring type $MONITORING_TYPE"

# --- The bundle ------------------------------------------------------------------------------------
if [ "$BUNDLE" = "$PREFIX/bundle" ]; then
    [ -n "$S3_BUCKET" ] || die "S3_BUCKET (3rd argument) is empty and BUNDLE is not set" 2
    mkdir -p "$BUNDLE"
    log "syncing s3://$S3_BUCKET/$S3_PREFIX/ to $BUNDLE"
    aws s3 sync --only-show-errors --delete --region "$REGION" "s3://$S3_BUCKET/$S3_PREFIX/" "$BUNDLE/" \
        || die "cannot download s3://$S3_BUCKET/$S3_PREFIX/: upload it with 'otel-efa deploy upload' and give the node role s3:GetObject on it"
fi
# The bundle must be what 'otel-efa deploy upload' built: every file its SHA256SUMS lists, unchanged.
[ -f "$BUNDLE/SHA256SUMS" ] || die "$BUNDLE has no SHA256SUMS: upload the bundle with 'otel-efa deploy upload'; nothing installed"
if ! bad=$(cd "$BUNDLE" && sha256sum --quiet -c SHA256SUMS 2>/dev/null); then
    die "$BUNDLE does not match its SHA256SUMS (${bad%%$'\n'*}): upload the bundle again with 'otel-efa deploy upload'; nothing installed"
fi
wheel=$(find "$BUNDLE" -maxdepth 1 -name 'otel_efa-*.whl' | sort -V | tail -n 1)
[ -n "$wheel" ] || die "no otel_efa-*.whl in $BUNDLE: upload the bundle with 'otel-efa deploy upload'"
grep -q "  $(basename "$wheel")\$" "$BUNDLE/SHA256SUMS" \
    || die "$(basename "$wheel") is not listed in $BUNDLE/SHA256SUMS: upload the bundle again with 'otel-efa deploy upload'; nothing installed"
for file in efa-monitor.service efa-monitor.yaml efa-monitor.logrotate efa-monitor.sysusers.conf; do
    [ -f "$BUNDLE/systemd/$file" ] || die "$BUNDLE/systemd/$file is missing from the bundle"
done

# --- Helpers that only write what differs ------------------------------------------------------------
CHANGED_UNITS=no
CHANGED_SERVICE=no

put_file() {  # put_file SOURCE DEST MODE: install SOURCE at DEST unless DEST already has that content
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        return 1
    fi
    install -D -m "$3" "$1" "$2"
    log "wrote ${2#"$ROOT"}"
}

find_python() {  # the given PYTHON, else the newest python3.x >= 3.9 on PATH (AL2023: python3 is 3.9,
    # python3.11 is a package away; boto3 releases after April 2026 need 3.10 or newer)
    local candidate candidates=(python3.13 python3.12 python3.11 python3.10 python3 python3.9)
    if [ -n "${PYTHON:-}" ]; then
        candidates=("$PYTHON")
    fi
    for candidate in "${candidates[@]}"; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# --- The agent in its own venv -----------------------------------------------------------------------
stamp="$PREFIX/installed-wheel.sha256"
wheel_sum="$(sha256sum "$wheel" | cut -d' ' -f1)  $(basename "$wheel")"
if [ -x "$VENV/bin/otel-efa" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wheel_sum" ]; then
    log "agent $(basename "$wheel") already installed in ${VENV#"$ROOT"}"
else
    python=$(find_python) || die "no Python 3.9 or newer found (set PYTHON=/path/to/python3)"
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating ${VENV#"$ROOT"} with $python ($("$python" --version 2>&1))"
        if ! "$python" -m venv "$VENV"; then
            rm -rf "$VENV"
            die "'$python -m venv' failed: install the venv module (Ubuntu: apt-get install -y python3-venv)"
        fi
    fi
    pip_args=(--quiet --disable-pip-version-check)
    if [ -d "$BUNDLE/wheels" ]; then  # an offline wheelhouse for nodes without PyPI access
        pip_args+=(--no-index --find-links "$BUNDLE/wheels")
    fi
    "$VENV/bin/python" -m pip uninstall --quiet --yes otel-efa >/dev/null 2>&1 || true
    "$VENV/bin/python" -m pip install "${pip_args[@]}" "$wheel" || die "pip could not install $wheel"
    "$VENV/bin/otel-efa" --version >/dev/null || die "the installed agent does not run: ${VENV#"$ROOT"}/bin/otel-efa --version"
    printf '%s\n' "$wheel_sum" > "$stamp"
    log "installed $("$VENV/bin/otel-efa" --version) in ${VENV#"$ROOT"}"
    CHANGED_SERVICE=yes
fi

# --- Configuration, unit, drop-in, logrotate, user, log file ---------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sed "s/^exporters:.*/exporters: [$EXPORTERS]   # monitoring type $MONITORING_TYPE/" \
    "$BUNDLE/systemd/efa-monitor.yaml" > "$work/config.yaml"
put_file "$work/config.yaml" "$ROOT/etc/otel-efa/config.yaml" 0644 && CHANGED_SERVICE=yes

cat > "$work/parallelcluster.conf" <<EOF
# Written by compute-node-efa-monitor.sh: the cluster's region and name for the agent.
[Service]
Environment=AWS_DEFAULT_REGION=$REGION
Environment=OTEL_RESOURCE_ATTRIBUTES=aws.parallelcluster.cluster_name=$CLUSTER_NAME
Environment=OTEL_EFA_CLUSTER_NAME=$CLUSTER_NAME
EOF
put_file "$BUNDLE/systemd/efa-monitor.service" "$UNIT_DIR/$UNIT" 0644 && CHANGED_UNITS=yes
put_file "$work/parallelcluster.conf" "$UNIT_DIR/$UNIT.d/parallelcluster.conf" 0644 && CHANGED_UNITS=yes
put_file "$BUNDLE/systemd/efa-monitor.logrotate" "$ROOT/etc/logrotate.d/efa-monitor" 0644 || true

if put_file "$BUNDLE/systemd/efa-monitor.sysusers.conf" "$ROOT/etc/sysusers.d/efa-monitor.conf" 0644 ||
    ! grep -q '^efa-monitor:' "$ROOT/etc/passwd" 2>/dev/null; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers --root="${ROOT:-/}" - < "$ROOT/etc/sysusers.d/efa-monitor.conf"
    elif [ -z "$ROOT" ]; then
        useradd --system --user-group --no-create-home --shell /usr/sbin/nologin efa-monitor
    else
        die "systemd-sysusers is needed to create the efa-monitor user under $ROOT"
    fi
fi
uid=$(awk -F: '$1 == "efa-monitor" { print $3 }' "$ROOT/etc/passwd")
gid=$(awk -F: '$1 == "efa-monitor" { print $4 }' "$ROOT/etc/passwd")
[ -n "$uid" ] || die "the efa-monitor user was not created"
log_file="$ROOT/var/log/efa_monitor.log"
if [ ! -f "$log_file" ]; then
    install -D -m 0640 -o "$uid" -g "$gid" /dev/null "$log_file"
    log "created /var/log/efa_monitor.log"
elif [ "$(stat -c %u:%g "$log_file")" != "$uid:$gid" ]; then
    chown "$uid:$gid" "$log_file"
fi

# --- ADOT collector, when the monitoring type sends OTLP -----------------------------------------------
if [ "$NEEDS_ADOT" = yes ]; then
    if [ -f "$BUNDLE/adot/install-adot.sh" ]; then
        log "installing the ADOT collector (adot/install-adot.sh)"
        # ADOT's amp mode: the agent sends CloudWatch itself (cloudwatch exporter), the collector only AMP.
        # install-adot.sh prints its own one-line reason when it refuses; its exit status is ours.
        bash "$BUNDLE/adot/install-adot.sh" --mode amp --region "$REGION" --amp-url "$AMP_URL" \
            --cluster-name "$CLUSTER_NAME" --config-dir "$BUNDLE/otel-config" --root "${ROOT:-/}" || exit $?
    else
        log "warning: no adot/install-adot.sh in the bundle; OTLP exports wait for a collector on 127.0.0.1:4317"
    fi
fi

# --- systemd -----------------------------------------------------------------------------------------
if [ -n "$ROOT" ] && [ -z "${SYSTEMCTL:-}" ]; then
    # An image or another root: enable the unit there; it starts when that system boots.
    if ! systemctl --root="$ROOT" is-enabled --quiet "$UNIT" 2>/dev/null; then
        systemctl --root="$ROOT" enable "$UNIT"
    fi
    log "efa-monitor enabled under $ROOT; it starts when that system boots"
else
    SYSTEMCTL="${SYSTEMCTL:-systemctl}"
    if [ "$CHANGED_UNITS" = yes ]; then
        "$SYSTEMCTL" daemon-reload
    fi
    if ! "$SYSTEMCTL" is-enabled --quiet "$UNIT"; then
        "$SYSTEMCTL" enable "$UNIT"
    fi
    if [ "$CHANGED_UNITS" = yes ] || [ "$CHANGED_SERVICE" = yes ]; then
        "$SYSTEMCTL" restart "$UNIT"
        log "efa-monitor (re)started"
    elif ! "$SYSTEMCTL" is-active --quiet "$UNIT"; then
        "$SYSTEMCTL" start "$UNIT"
        log "efa-monitor started"
    else
        log "efa-monitor already up to date and running"
    fi
fi
log "done; check the node with: sudo ${VENV#"$ROOT"}/bin/otel-efa doctor"
