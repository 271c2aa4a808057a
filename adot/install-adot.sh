#!/usr/bin/env bash
# Install the ADOT collector on a compute node and route otel-efa's metrics through it.
#
#   install-adot.sh [--mode cloudwatch|amp|both] [--package URL|FILE] (--sha256 HEX | --signature URL|FILE
#                   --gpg-key FILE | --no-verify) [--region REGION] [--amp-url URL] [--config-dir DIR]
#                   [--arch amd64|arm64] [--upgrade] [--root DIR] [--dry-run]
#
# Steps: detect the OS (RPM on Amazon Linux 2 / 2023, DEB on Ubuntu); fetch the package unless ADOT is
# already installed (or --upgrade); verify it (SHA-256 or a detached GPG signature: nothing unverified is
# installed unless --no-verify); install it; place the chosen otel-config/adot-<mode>.yaml and its
# environment (/etc/otel-efa/adot.env, read by the service through a systemd drop-in); order efa-monitor
# after aws-otel-collector; start the collector with aws-otel-collector-ctl.
#
# Running it again changes nothing that is already right. --dry-run prints every action and does none.
# --root DIR writes the files under DIR (for tests and image builds) and only prints the commands that act
# on the running system (package install, systemctl, aws-otel-collector-ctl).
set -euo pipefail

readonly ADOT_HOME=/opt/aws/aws-otel-collector
readonly CTL="$ADOT_HOME/bin/aws-otel-collector-ctl"
readonly ETC_DIR=/etc/otel-efa
readonly ENV_FILE="$ETC_DIR/adot.env"
readonly ADOT_DROPIN=/etc/systemd/system/aws-otel-collector.service.d/otel-efa.conf
readonly EFA_DROPIN=/etc/systemd/system/efa-monitor.service.d/after-adot.conf
readonly DOWNLOAD_BASE=https://aws-otel-collector.s3.amazonaws.com

MODE=both
PACKAGE=""
SHA256=""
SIGNATURE=""
GPG_KEY=""
NO_VERIFY=0
REGION="${AWS_REGION:-}"
AMP_REMOTE_WRITE_URL="${AMP_REMOTE_WRITE_URL:-}"
CONFIG_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../otel-config"
ARCH=""
UPGRADE=0
ROOT=/
DRY_RUN=0
WORK_DIR=""

die() { printf 'install-adot: %s\n' "$*" >&2; exit 2; }
note() { printf '%s\n' "$*"; }

usage() { sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

cleanup() { if [ -n "$WORK_DIR" ]; then rm -rf "$WORK_DIR"; fi; }
trap cleanup EXIT

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --mode) MODE="${2:?--mode needs a value}"; shift 2 ;;
            --package) PACKAGE="${2:?--package needs a value}"; shift 2 ;;
            --sha256) SHA256="${2:?--sha256 needs a value}"; shift 2 ;;
            --signature) SIGNATURE="${2:?--signature needs a value}"; shift 2 ;;
            --gpg-key) GPG_KEY="${2:?--gpg-key needs a value}"; shift 2 ;;
            --no-verify) NO_VERIFY=1; shift ;;
            --region) REGION="${2:?--region needs a value}"; shift 2 ;;
            --amp-url) AMP_REMOTE_WRITE_URL="${2:?--amp-url needs a value}"; shift 2 ;;
            --config-dir) CONFIG_DIR="${2:?--config-dir needs a value}"; shift 2 ;;
            --arch) ARCH="${2:?--arch needs a value}"; shift 2 ;;
            --upgrade) UPGRADE=1; shift ;;
            --root) ROOT="${2:?--root needs a value}"; shift 2 ;;
            --dry-run) DRY_RUN=1; shift ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown argument: $1 (see --help)" ;;
        esac
    done
    case "$MODE" in cloudwatch|amp|both) ;; *) die "--mode must be cloudwatch, amp or both, not $MODE" ;; esac
    [ -d "$ROOT" ] || die "--root $ROOT is not a directory"
    ROOT="$(cd "$ROOT" && pwd)"
    [ -f "$CONFIG_DIR/adot-$MODE.yaml" ] || die "no $CONFIG_DIR/adot-$MODE.yaml (use --config-dir)"
    if [ -n "$SHA256" ] && ! printf '%s' "$SHA256" | grep -Eq '^[0-9a-fA-F]{64}$'; then
        die "--sha256 must be 64 hexadecimal digits"
    fi
    if [ -n "$SIGNATURE" ] && [ -z "$GPG_KEY" ]; then die "--signature needs --gpg-key"; fi
}

# The path of a system file, under --root.
at_root() { if [ "$ROOT" = / ]; then printf '%s' "$1"; else printf '%s%s' "$ROOT" "$1"; fi; }

# Run a command that acts on the running system: printed always, run only for real on the real root.
run() {
    if [ "$DRY_RUN" -eq 1 ]; then
        printf '+ %s\n' "$*"
    elif [ "$ROOT" != / ]; then
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
    if [ "$DRY_RUN" -eq 1 ]; then return 0; fi
    mkdir -p "$(dirname "$target")"
    printf '%s\n' "$content" > "$target.tmp"
    chmod "$mode" "$target.tmp"
    mv -f "$target.tmp" "$target"
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
        amzn:2) OS=al2; FORMAT=rpm; INSTALL=(yum install -y) ;;
        amzn:2023*) OS=al2023; FORMAT=rpm; INSTALL=(dnf install -y) ;;
        ubuntu:*) OS=ubuntu; FORMAT=deb; INSTALL=(apt-get install -y) ;;
        *) die "unsupported OS $id $version (Amazon Linux 2, Amazon Linux 2023 and Ubuntu are)" ;;
    esac
    note "OS: $OS ($id $version), $FORMAT package"
}

default_package_url() {
    local arch="$ARCH" dir
    if [ -z "$arch" ]; then
        case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) die "unknown CPU $(uname -m); use --arch" ;; esac
    fi
    if [ "$FORMAT" = rpm ]; then dir=amazon_linux; else dir=ubuntu; fi
    printf '%s/%s/%s/latest/aws-otel-collector.%s' "$DOWNLOAD_BASE" "$dir" "$arch" "$FORMAT"
}

# The region from the instance's metadata (IMDSv2), when neither --region nor AWS_REGION gave one.
imds_region() {
    local endpoint="${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}" token
    token="$(curl -fsS -m 2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "$endpoint/latest/api/token")" || return 1
    curl -fsS -m 2 -H "X-aws-ec2-metadata-token: $token" "$endpoint/latest/meta-data/placement/region"
}

resolve_region() {
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
        printf '%s' "$AMP_REMOTE_WRITE_URL" | grep -Eq '^https://aps-workspaces\.[a-z0-9-]+\.amazonaws\.com/workspaces/ws-[A-Za-z0-9-]+/api/v1/remote_write$' \
            || die "--amp-url (or AMP_REMOTE_WRITE_URL) must be the workspace's remote write URL, got '${AMP_REMOTE_WRITE_URL}'"
    fi
}

# Fetch (if a URL), verify and install the package, unless ADOT is installed already.
install_package() {
    if [ -x "$(at_root "$CTL")" ] && [ "$UPGRADE" -eq 0 ]; then
        note "= ADOT collector already installed ($CTL); --upgrade reinstalls"
        return 0
    fi
    local source="${PACKAGE:-$(default_package_url)}" file
    case "$source" in
        http://*|https://*)
            work_dir > /dev/null  # made here, not in the $(...) subshell below, so cleanup sees it
            file="$(work_dir)/aws-otel-collector.$FORMAT"
            fetch "$source" "$file" ;;
        *)
            [ -f "$source" ] || die "package file $source does not exist"
            file="$source" ;;
    esac
    verify "$file"
    run "${INSTALL[@]}" "$file"
}

# A download is printed, and done unless this is a dry run (it changes nothing on the system).
fetch() {
    printf '+ curl -fsSL --retry 3 -o %s %s\n' "$2" "$1"
    if [ "$DRY_RUN" -eq 0 ]; then curl -fsSL --retry 3 -o "$2" "$1"; fi
}

work_dir() {
    if [ "$DRY_RUN" -eq 1 ]; then printf '/tmp'; return 0; fi
    if [ -z "$WORK_DIR" ]; then WORK_DIR="$(mktemp -d)"; fi
    printf '%s' "$WORK_DIR"
}

verify() {
    local file="$1" signature
    if [ -n "$SHA256" ]; then
        note "+ verify SHA-256 of $file"
        if [ "$DRY_RUN" -eq 0 ]; then
            printf '%s  %s\n' "$SHA256" "$file" | sha256sum -c --status - \
                || die "SHA-256 of $file is not $SHA256: not installing it"
        fi
    elif [ -n "$SIGNATURE" ]; then
        signature="$SIGNATURE"
        case "$SIGNATURE" in
            http://*|https://*)
                work_dir > /dev/null
                signature="$(work_dir)/aws-otel-collector.$FORMAT.sig"
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
    elif [ "$NO_VERIFY" -eq 1 ]; then
        note "! installing $file without verifying it (--no-verify)"
    else
        die "refusing to install an unverified package: give --sha256, or --signature with --gpg-key (or --no-verify)"
    fi
}

place_config() {
    put_file "$ETC_DIR/adot-$MODE.yaml" 0644 < "$CONFIG_DIR/adot-$MODE.yaml"
    {
        printf '# The ADOT collector environment for otel-efa (written by install-adot.sh)\n'
        if [ -n "$REGION" ]; then printf 'AWS_REGION=%s\n' "$REGION"; fi
        if [ "$MODE" != cloudwatch ]; then printf 'AMP_REMOTE_WRITE_URL=%s\n' "$AMP_REMOTE_WRITE_URL"; fi
    } | put_file "$ENV_FILE" 0644
    printf '[Service]\nEnvironmentFile=%s\n' "$ENV_FILE" | put_file "$ADOT_DROPIN" 0644
    printf '[Unit]\nWants=aws-otel-collector.service\nAfter=aws-otel-collector.service\n' \
        | put_file "$EFA_DROPIN" 0644
}

main() {
    parse_args "$@"
    if [ "$DRY_RUN" -eq 1 ]; then note "dry run: nothing is changed"; fi
    detect_os
    resolve_region
    install_package
    place_config
    run systemctl daemon-reload
    run "$CTL" -c "$ETC_DIR/adot-$MODE.yaml" -a start
    note "done: ADOT ($MODE) takes OTLP on 127.0.0.1:4317; efa-monitor starts after it"
}

main "$@"
