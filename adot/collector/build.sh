#!/usr/bin/env bash
# Build the test collector at one contrib release: adot/collector/build.sh RELEASE OUTPUT_DIR
# Renders manifest.yaml for RELEASE (plus replaces-RELEASE, if any) and runs the OpenTelemetry Collector
# Builder of the same release. Go's module and build caches make a rebuild take seconds.
set -euo pipefail
release="${1:?usage: build.sh RELEASE OUTPUT_DIR}"
output="${2:?usage: build.sh RELEASE OUTPUT_DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
contrib=github.com/open-telemetry/opentelemetry-collector-contrib
command -v go >/dev/null 2>&1 || { echo "build.sh: no go on PATH (Go 1.26 or newer builds the collector; 0.156.0 needs 1.25)" >&2; exit 2; }
mkdir -p "$output"
output="$(cd "$output" && pwd)"
manifest="$output/manifest.yaml"
sed -e "s|@CONTRIB@|$release|g" -e "s|@OUTPUT@|$output/src|g" "$here/manifest.yaml" > "$manifest"
if [ -f "$here/replaces-$release" ]; then
    echo "replaces:" >> "$manifest"
    # A line is "MODULE VERSION": MODULE is under contrib (internal/aws/cwlogs) or, when its first element
    # has a dot, a full module path (go.opentelemetry.io/contrib/detectors/hetzner). Every version of
    # MODULE is replaced by VERSION.
    grep -v '^\s*#' "$here/replaces-$release" | while read -r module version; do
        [ -n "$module" ] || continue
        case "${module%%/*}" in *.*) ;; *) module="$contrib/$module" ;; esac
        echo "  - $module => $module $version"
    done >> "$manifest"
fi
go run "go.opentelemetry.io/collector/cmd/builder@v$release" --config "$manifest"
mv "$output/src/otelcol-efa" "$output/otelcol-efa"
