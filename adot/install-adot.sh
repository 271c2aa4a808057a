#!/usr/bin/env bash
# Install the ADOT collector on a compute node and route otel-efa's metrics through it.
#
#   install-adot.sh [--mode cloudwatch|amp|both] [--version vX.Y.Z] [--package URL|FILE]
#                   [--sha256 HEX | --signature URL|FILE --gpg-key FILE | --no-verify]
#                   [--region REGION] [--amp-url URL] [--cluster-name NAME] [--config-dir DIR]
#                   [--arch amd64|arm64] [--upgrade] [--root DIR] [--dry-run]
#   install-adot.sh --uninstall [--root DIR] [--dry-run]
#
# Steps: detect the OS (RPM on Amazon Linux 2 / 2023, DEB on Ubuntu); install ADOT --version (default and
# minimum: adot/adot-releases.txt) unless that release or a newer one is installed (--upgrade reinstalls);
# the package comes from ADOT's S3 release path for that version, or --package; it is verified first
# (--sha256, a detached GPG --signature, or the SHA-256 adot-releases.txt pins for the release; nothing
# unverified is installed unless --no-verify), and refused when it is older than the minimum. Then place
# otel-config/adot-<mode>.yaml and the collector's environment (/etc/otel-efa/adot.env: AWS_REGION,
# AMP_REMOTE_WRITE_URL, OTEL_EFA_CLUSTER_NAME; read through a systemd drop-in), order efa-monitor after
# aws-otel-collector and start the collector with aws-otel-collector-ctl.
#
# Running it again changes nothing that is already right. --dry-run prints every action and does none.
# --uninstall removes what this script installed: its files, and the package if it installed it.
# --root DIR (or ROOT=DIR) installs under DIR: files are written there and the package manager gets
# --root DIR; systemctl and aws-otel-collector-ctl are only printed, unless SYSTEMCTL=CMD names the
# systemctl that manages the running services (as in parallelcluster/compute-node-efa-monitor.sh).
# ADOT_DOWNLOAD_BASE replaces https://aws-otel-collector.s3.amazonaws.com (a mirror, or file:// in tests).
set -euo pipefail

readonly ADOT_HOME=/opt/aws/aws-otel-collector
readonly CTL="$ADOT_HOME/bin/aws-otel-collector-ctl"
readonly PACKAGE_NAME=aws-otel-collector
readonly ETC_DIR=/etc/otel-efa
readonly ENV_FILE="$ETC_DIR/adot.env"
readonly MARKER="$ETC_DIR/adot-package.installed"
readonly ADOT_DROPIN=/etc/systemd/system/aws-otel-collector.service.d/otel-efa.conf
readonly EFA_DROPIN=/etc/systemd/system/efa-monitor.service.d/after-adot.conf
readonly CFNCONFIG=/etc/parallelcluster/cfnconfig
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
readonly RELEASES="$HERE/adot-releases.txt"
DOWNLOAD_BASE="${ADOT_DOWNLOAD_BASE:-https://aws-otel-collector.s3.amazonaws.com}"
DOWNLOAD_BASE="${DOWNLOAD_BASE%/}"

MODE=both
VERSION=""
PACKAGE=""
SHA256=""
SIGNATURE=""
GPG_KEY=""
NO_VERIFY=0
REGION="${AWS_REGION:-}"
AMP_REMOTE_WRITE_URL="${AMP_REMOTE_WRITE_URL:-}"
CLUSTER_NAME=""
CONFIG_DIR="$HERE/../otel-config"
ARCH=""
UPGRADE=0
ROOT="${ROOT:-/}"
DRY_RUN=0
UNINSTALL=0
WORK_DIR=""
MINIMUM=""
PM_ROOT=()
CHANGED=0

die() { printf 'install-adot: %s\n' "$*" >&2; exit 2; }
fail() { printf 'install-adot: %s\n' "$*" >&2; exit 1; }
note() { printf '%s\n' "$*"; }

usage() { sed -n '2,25s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

cleanup() { if [ -n "$WORK_DIR" ]; then rm -rf "$WORK_DIR"; fi; }
trap cleanup EXIT

# A line of adot/adot-releases.txt: `release KEY` -> "minimum"/"default" value; the table is read by lookup.
release_setting() {
    [ -f "$RELEASES" ] || fail "$RELEASES is missing (it ships beside this script)"
    awk -v key="$1" '$1 == key { print $2; exit }' "$RELEASES"
}

# The SHA-256 adot-releases.txt pins for VERSION FORMAT ARCH ("" when none, "-" included).
pinned_sha256() {
    awk -v v="v$1" -v f="$2" -v a="$3" '$1 == v && $2 == f && $3 == a && $4 != "-" { print $4; exit }' "$RELEASES"
}

# "v0.49.0" or "0.49.0" -> "0.49.0"; anything else -> nothing.
normalize_version() {
    printf '%s' "${1#v}" | grep -Eo '^[0-9]+\.[0-9]+\.[0-9]+' || true
}

# version_ge A B: A >= B (both X.Y.Z).
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$2" ]; }

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --mode) MODE="${2:?--mode needs a value}"; shift 2 ;;
            --version) VERSION="${2:?--version needs a value}"; shift 2 ;;
            --package) PACKAGE="${2:?--package needs a value}"; shift 2 ;;
            --sha256) SHA256="${2:?--sha256 needs a value}"; shift 2 ;;
            --signature) SIGNATURE="${2:?--signature needs a value}"; shift 2 ;;
            --gpg-key) GPG_KEY="${2:?--gpg-key needs a value}"; shift 2 ;;
            --no-verify) NO_VERIFY=1; shift ;;
            --region) REGION="${2:?--region needs a value}"; shift 2 ;;
            --amp-url) AMP_REMOTE_WRITE_URL="${2:?--amp-url needs a value}"; shift 2 ;;
            --cluster-name) CLUSTER_NAME="${2:?--cluster-name needs a value}"; shift 2 ;;
            --config-dir) CONFIG_DIR="${2:?--config-dir needs a value}"; shift 2 ;;
            --arch) ARCH="${2:?--arch needs a value}"; shift 2 ;;
            --upgrade) UPGRADE=1; shift ;;
            --root) ROOT="${2:?--root needs a value}"; shift 2 ;;
            --dry-run) DRY_RUN=1; shift ;;
            --uninstall) UNINSTALL=1; shift ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown argument: $1 (see --help)" ;;
        esac
    done
    [ -d "$ROOT" ] || die "--root $ROOT is not a directory"
    ROOT="$(cd "$ROOT" && pwd)"
    if [ "$ROOT" != / ]; then PM_ROOT=(--root "$ROOT"); fi  # the package manager's option
    if [ "$UNINSTALL" -eq 1 ]; then return 0; fi
    case "$MODE" in cloudwatch|amp|both) ;; *) die "--mode must be cloudwatch, amp or both, not $MODE" ;; esac
    [ -f "$CONFIG_DIR/adot-$MODE.yaml" ] || die "no $CONFIG_DIR/adot-$MODE.yaml (use --config-dir)"
    MINIMUM="$(normalize_version "$(release_setting minimum)")"
    [ -n "$MINIMUM" ] || fail "$RELEASES has no 'minimum vX.Y.Z' line"
    if [ -z "$VERSION" ]; then VERSION="$(release_setting default)"; fi
    local requested="$VERSION"
    VERSION="$(normalize_version "$VERSION")"
    [ -n "$VERSION" ] || die "--version must look like v0.49.0, not '$requested'"
    version_ge "$VERSION" "$MINIMUM" \
        || die "ADOT v$VERSION is older than the minimum v$MINIMUM (its metricstransform forms no node totals): use --version v$MINIMUM or newer"
    case "$ARCH" in ""|amd64|arm64) ;; *) die "--arch must be amd64 or arm64, not $ARCH" ;; esac
    if [ -n "$SHA256" ] && ! printf '%s' "$SHA256" | grep -Eq '^[0-9a-fA-F]{64}$'; then
        die "--sha256 must be 64 hexadecimal digits"
    fi
    if [ -n "$SIGNATURE" ] && [ -z "$GPG_KEY" ]; then die "--signature needs --gpg-key"; fi
    if [ -n "$CLUSTER_NAME" ] && ! printf '%s' "$CLUSTER_NAME" | grep -Eq '^[A-Za-z][A-Za-z0-9-]{0,59}$'; then
        die "--cluster-name $CLUSTER_NAME is not a ParallelCluster cluster name (a letter, then letters, digits, '-')"
    fi
}

# The path of a system file, under --root.
at_root() { if [ "$ROOT" = / ]; then printf '%s' "$1"; else printf '%s%s' "$ROOT" "$1"; fi; }


# Run a command that changes the system (the package manager, under --root): printed, done unless dry run.
act() {
    printf '+ %s\n' "$*"
    if [ "$DRY_RUN" -eq 0 ]; then "$@"; fi
}

# Run a command that acts on the running services: printed always; run on the real root, or under --root
# when SYSTEMCTL names the systemctl that manages them.
run_service() {
    if [ "$DRY_RUN" -eq 1 ]; then
        printf '+ %s\n' "$*"
    elif [ "$ROOT" != / ] && [ -z "${SYSTEMCTL:-}" ]; then
        printf '+ %s   (skipped: --root %s)\n' "$*" "$ROOT"
    else
        printf '+ %s\n' "$*"
        "$@"
    fi
}

# Write stdin to a system file (under --root) with a mode, only when the content differs.
put_file() {
    local path="$1" mode="$2" target content
    target="$(at_root "$path")"
    content="$(cat)"
    if [ -f "$target" ] && [ "$(cat "$target")" = "$content" ]; then
        note "= $path unchanged"
        return 0
    fi
    note "+ write $path (mode $mode)"
    CHANGED=1
    if [ "$DRY_RUN" -eq 1 ]; then return 0; fi
    mkdir -p "$(dirname "$target")"
    printf '%s\n' "$content" > "$target.tmp"
    chmod "$mode" "$target.tmp"
    mv -f "$target.tmp" "$target"
}

remove_file() {
    local target
    target="$(at_root "$1")"
    if [ -e "$target" ]; then
        note "- remove $1"
        if [ "$DRY_RUN" -eq 0 ]; then rm -f "$target"; fi
    fi
}

remove_dir_if_empty() {
    local target
    target="$(at_root "$1")"
    if [ -d "$target" ] && [ -z "$(ls -A "$target")" ]; then
        note "- remove $1/ (empty)"
        if [ "$DRY_RUN" -eq 0 ]; then rmdir "$target"; fi
    fi
}

os_field() {
    sed -n "s/^$1=//p" "$(at_root /etc/os-release)" | tr -d '"' | head -n 1
}

detect_os() {
    [ -f "$(at_root /etc/os-release)" ] || die "no /etc/os-release under $ROOT: cannot tell the OS"
    local id version
    id="$(os_field ID)"
    version="$(os_field VERSION_ID)"
    case "$id:$version" in
        amzn:2) OS=al2; FORMAT=rpm ;;
        amzn:2023*) OS=al2023; FORMAT=rpm ;;
        ubuntu:*) OS=ubuntu; FORMAT=deb ;;
        *) die "unsupported OS $id $version (Amazon Linux 2, Amazon Linux 2023 and Ubuntu are)" ;;
    esac
    if [ -z "$ARCH" ]; then
        case "$(uname -m)" in x86_64) ARCH=amd64 ;; aarch64) ARCH=arm64 ;; *) die "unknown CPU $(uname -m); use --arch" ;; esac
    fi
    note "OS: $OS ($id $version), $FORMAT package, $ARCH"
}

# ADOT's release path (aws-otel-collector's tools/release/image-binary-release/s3-release.sh puts each
# release under DIR/ARCH/vX.Y.Z/ beside DIR/ARCH/latest/; the GitHub release notes list these links).
package_url() {
    local dir
    if [ "$FORMAT" = rpm ]; then dir=amazon_linux; else dir=ubuntu; fi
    printf '%s/%s/%s/v%s/%s.%s' "$DOWNLOAD_BASE" "$dir" "$ARCH" "$VERSION" "$PACKAGE_NAME" "$FORMAT"
}

# The region from the instance's metadata (IMDSv2), when neither --region nor AWS_REGION gave one.
imds_region() {
    local endpoint="${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}" token
    token="$(curl -fsS -m 2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "$endpoint/latest/api/token")" || return 1
    curl -fsS -m 2 -H "X-aws-ec2-metadata-token: $token" "$endpoint/latest/meta-data/placement/region"
}

# A variable of ParallelCluster's /etc/parallelcluster/cfnconfig (see compute-node-efa-monitor.sh).
cfnconfig_value() {
    local file
    file="$(at_root "$CFNCONFIG")"
    if [ -f "$file" ]; then sed -n "s/^$1=//p" "$file" | tr -d "\"'" | tail -n 1; fi
}

resolve_settings() {
    if [ -z "$REGION" ]; then REGION="$(cfnconfig_value cfn_region)"; fi
    if [ -z "$REGION" ] && [ "$DRY_RUN" -eq 0 ] && [ "$ROOT" = / ]; then
        REGION="$(imds_region || true)"
    fi
    if [ -z "$REGION" ]; then
        if [ "$MODE" = cloudwatch ]; then
            note "region: not given; awsemf will ask the instance metadata"
        else
            die "--region (or AWS_REGION) is needed for AMP's sigv4auth"
        fi
    else
        printf '%s' "$REGION" | grep -Eq '^[a-z]{2}(-[a-z]+)+-[0-9]+$' || die "--region $REGION does not look like a region"
        note "region: $REGION"
    fi
    if [ "$MODE" != cloudwatch ]; then
        [ -n "$AMP_REMOTE_WRITE_URL" ] || die "--amp-url URL (the AMP workspace's remote write URL) is needed for --mode $MODE"
        printf '%s' "$AMP_REMOTE_WRITE_URL" | grep -Eq '^https://aps-workspaces\.[a-z0-9-]+\.amazonaws\.com/workspaces/ws-[A-Za-z0-9-]+/api/v1/remote_write$' \
            || die "--amp-url (or AMP_REMOTE_WRITE_URL) must be the workspace's remote write URL, got '${AMP_REMOTE_WRITE_URL}'"
    fi
    if [ -z "$CLUSTER_NAME" ]; then CLUSTER_NAME="$(cfnconfig_value stack_name)"; fi
    if [ -n "$CLUSTER_NAME" ]; then
        note "cluster: $CLUSTER_NAME"
    else
        note "cluster: not given (--cluster-name); OTEL_EFA_CLUSTER_NAME stays unset"
    fi
}

# The installed ADOT's version (X.Y.Z), or nothing: the VERSION file the package ships (the control
# script reads bin/VERSION), else the package manager's record.
installed_version() {
    local file version=""
    for file in "$ADOT_HOME/bin/VERSION" "$ADOT_HOME/VERSION"; do
        if [ -f "$(at_root "$file")" ]; then
            version="$(normalize_version "$(head -n 1 "$(at_root "$file")")")"
            if [ -n "$version" ]; then printf '%s' "$version"; return 0; fi
        fi
    done
    if [ "$FORMAT" = rpm ]; then
        version="$(rpm ${PM_ROOT[@]+"${PM_ROOT[@]}"} -q --qf '%{VERSION}' "$PACKAGE_NAME" 2>/dev/null || true)"
    else
        version="$(dpkg-query --admindir "$(at_root /var/lib/dpkg)" -W -f '${Version}' "$PACKAGE_NAME" 2>/dev/null || true)"
    fi
    normalize_version "$version"
}

# The version a package file carries (X.Y.Z), from its own metadata.
package_version() {
    if [ "$FORMAT" = rpm ]; then
        normalize_version "$(rpm -qp --qf '%{VERSION}' "$1" 2>/dev/null || true)"
    else
        normalize_version "$(dpkg-deb -f "$1" Version 2>/dev/null || true)"
    fi
}

# Choose, fetch, verify and install the package, unless this release or a newer one is installed.
install_package() {
    local installed source file found
    installed="$(installed_version)"
    if [ -n "$installed" ] && [ "$UPGRADE" -eq 0 ] && version_ge "$installed" "$VERSION"; then
        note "= ADOT v$installed installed (v$VERSION or newer); --upgrade reinstalls v$VERSION"
        return 0
    fi
    if [ -n "$installed" ]; then
        note "ADOT v$installed installed: installing v$VERSION over it"
    elif [ -e "$(at_root "$CTL")" ]; then
        note "ADOT installed, version unknown: installing v$VERSION over it"
    fi
    source="${PACKAGE:-$(package_url)}"
    case "$source" in
        http://*|https://*|file://*)
            work_dir > /dev/null  # made here, not in the $(...) subshell below, so cleanup sees it
            file="$(work_dir)/$PACKAGE_NAME.$FORMAT"
            fetch "$source" "$file" ;;
        *)
            [ -f "$source" ] || die "package file $source does not exist"
            file="$source" ;;
    esac
    verify "$file"
    if [ "$DRY_RUN" -eq 0 ]; then
        found="$(package_version "$file")"
        [ -n "$found" ] || fail "cannot read the version of $file: not installing it"
        version_ge "$found" "$MINIMUM" \
            || die "$file is ADOT v$found, older than the minimum v$MINIMUM (its metricstransform forms no node totals): use v$MINIMUM or newer"
        note "package: ADOT v$found"
    fi
    if [ "$FORMAT" = rpm ]; then
        act rpm -U --replacepkgs ${PM_ROOT[@]+"${PM_ROOT[@]}"} "$file"
    else
        act dpkg ${PM_ROOT[@]+"${PM_ROOT[@]}"} -i "$file"
    fi
    CHANGED=1
    printf '%s %s\n' "$PACKAGE_NAME" "$FORMAT" | put_file "$MARKER" 0644
}

# A download is printed, and done unless this is a dry run (it changes nothing on the system).
fetch() {
    printf '+ curl -fsSL --retry 3 -o %s %s\n' "$2" "$1"
    if [ "$DRY_RUN" -eq 0 ]; then
        curl -fsSL --retry 3 -o "$2" "$1" || fail "cannot download $1"
    fi
}

work_dir() {
    if [ "$DRY_RUN" -eq 1 ]; then printf '/tmp'; return 0; fi
    if [ -z "$WORK_DIR" ]; then WORK_DIR="$(mktemp -d)"; fi
    printf '%s' "$WORK_DIR"
}

verify_sha256() {
    local file="$1" expected="$2" source="$3"
    note "+ verify SHA-256 of $file ($source)"
    if [ "$DRY_RUN" -eq 0 ]; then
        printf '%s  %s\n' "$expected" "$file" | sha256sum -c --status - \
            || die "SHA-256 of $file is not $expected ($source): not installing it"
    fi
}

verify() {
    local file="$1" signature pinned
    pinned="$(pinned_sha256 "$VERSION" "$FORMAT" "$ARCH")"
    if [ -n "$SHA256" ]; then
        verify_sha256 "$file" "$SHA256" "--sha256"
    elif [ -n "$SIGNATURE" ]; then
        signature="$SIGNATURE"
        case "$SIGNATURE" in
            http://*|https://*|file://*)
                work_dir > /dev/null
                signature="$(work_dir)/$PACKAGE_NAME.$FORMAT.sig"
                fetch "$SIGNATURE" "$signature" ;;
        esac
        note "+ verify GPG signature $signature with key $GPG_KEY"
        if [ "$DRY_RUN" -eq 0 ]; then
            local keyring
            keyring="$(mktemp -d)"
            if ! { gpg --batch --quiet --homedir "$keyring" --import "$GPG_KEY" \
                    && gpg --batch --quiet --homedir "$keyring" --verify "$signature" "$file"; }; then
                rm -rf "$keyring"
                die "GPG signature of $file does not verify: not installing it"
            fi
            rm -rf "$keyring"
        fi
    elif [ -n "$pinned" ]; then
        verify_sha256 "$file" "$pinned" "adot-releases.txt, v$VERSION $FORMAT $ARCH"
    elif [ "$NO_VERIFY" -eq 1 ]; then
        note "! installing $file without verifying it (--no-verify)"
    else
        die "no known SHA-256 for ADOT v$VERSION $FORMAT $ARCH (AWS publishes none): pass --sha256 HEX, or --signature URL|FILE with --gpg-key FILE"
    fi
}

place_config() {
    put_file "$ETC_DIR/adot-$MODE.yaml" 0644 < "$CONFIG_DIR/adot-$MODE.yaml"
    {
        printf '# The ADOT collector environment for otel-efa (written by install-adot.sh)\n'
        if [ -n "$REGION" ]; then printf 'AWS_REGION=%s\n' "$REGION"; fi
        if [ "$MODE" != cloudwatch ]; then printf 'AMP_REMOTE_WRITE_URL=%s\n' "$AMP_REMOTE_WRITE_URL"; fi
        if [ -n "$CLUSTER_NAME" ]; then printf 'OTEL_EFA_CLUSTER_NAME=%s\n' "$CLUSTER_NAME"; fi
    } | put_file "$ENV_FILE" 0644
    printf '[Service]\nEnvironmentFile=%s\n' "$ENV_FILE" | put_file "$ADOT_DROPIN" 0644
    printf '[Unit]\nWants=aws-otel-collector.service\nAfter=aws-otel-collector.service\n' \
        | put_file "$EFA_DROPIN" 0644
}

uninstall() {
    local format
    format="$(awk '{ print $2 }' "$(at_root "$MARKER")" 2>/dev/null || true)"
    if [ -x "$(at_root "$CTL")" ]; then run_service "$(at_root "$CTL")" -a stop; fi
    case "$format" in
        rpm) act rpm -e ${PM_ROOT[@]+"${PM_ROOT[@]}"} "$PACKAGE_NAME" ;;
        deb) act dpkg ${PM_ROOT[@]+"${PM_ROOT[@]}"} --purge "$PACKAGE_NAME" ;;
        *) note "= the ADOT package was not installed by install-adot.sh: left in place" ;;
    esac
    local mode
    for mode in cloudwatch amp both; do remove_file "$ETC_DIR/adot-$mode.yaml"; done
    remove_file "$ENV_FILE"
    remove_file "$ADOT_DROPIN"
    remove_file "$EFA_DROPIN"
    remove_file "$MARKER"
    remove_dir_if_empty "$(dirname "$ADOT_DROPIN")"
    remove_dir_if_empty "$(dirname "$EFA_DROPIN")"
    remove_dir_if_empty "$ETC_DIR"
    run_service "${SYSTEMCTL:-systemctl}" daemon-reload
    note "done: ADOT and its otel-efa configuration removed"
}

main() {
    parse_args "$@"
    if [ "$DRY_RUN" -eq 1 ]; then note "dry run: nothing is changed"; fi
    if [ "$UNINSTALL" -eq 1 ]; then uninstall; return 0; fi
    detect_os
    resolve_settings
    install_package
    place_config
    if [ "$CHANGED" -eq 0 ] && [ "$DRY_RUN" -eq 0 ] && { [ "$ROOT" = / ] || [ -n "${SYSTEMCTL:-}" ]; } \
            && "${SYSTEMCTL:-systemctl}" is-active --quiet aws-otel-collector.service; then
        note "= aws-otel-collector is running with this configuration"
    else
        run_service "${SYSTEMCTL:-systemctl}" daemon-reload
        run_service "$(at_root "$CTL")" -c "$(at_root "$ETC_DIR/adot-$MODE.yaml")" -a start
    fi
    note "done: ADOT v$VERSION ($MODE) takes OTLP on 127.0.0.1:4317; efa-monitor starts after it"
}

main "$@"
