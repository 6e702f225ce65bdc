#!/usr/bin/env bash
# Run the Open Responses compliance suite against the bridge on loopback (a local check, not CI).
#
# The suite (bin/compliance-test.ts and src/lib/ of the Open Responses repository) is published on
# GitHub only: `npm view openresponses` is a 404, so CI, which reaches package registries alone,
# cannot get it. Our own tests of the same rules run everywhere: tests/e2e/test_compaction_http.py
# (compaction) and the HTTP suites; see tests/support/openresponses/README.md.
#
# What this script does:
#   1. installs bun and zod from the npm registry into tests/support/openresponses/.cache/ (git-ignored);
#   2. lays the suite's files from a checkout you give (--source DIR) beside that node_modules;
#   3. starts `responses-bridge serve --store memory` on a free loopback port in front of a backend,
#      unless --base-url points at a bridge already running. The backend is `--backend fixtures`
#      (the default: the built-in scripted backend, model fixture-scripted) or `--backend llamacpp`
#      (the real llama-server of tests/support/llamacpp/ with the tiny model and its vision
#      projector, started here by `python -m tests.support.llamacpp.serve`; needs a finished
#      tests/support/llamacpp/build.sh; bridge profile llamacpp, model tiny-qwen3);
#   4. runs the suite (all tests, or --filter ids) and prints its report (--json for JSON).
#
# Usage: tests/support/openresponses/run.sh --source DIR [--backend fixtures|llamacpp | --base-url URL]
#        [--filter IDS] [--json] [--model NAME] [--api-key KEY]
# (python3 must be the project's venv, with responses-bridge installed, for --backend llamacpp.)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
cache="$here/.cache"
source_dir=""
base_url=""
backend="fixtures"
model=""
api_key="sk-compliance"
extra=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --source) source_dir="$2"; shift 2 ;;
    --base-url) base_url="$2"; shift 2 ;;
    --backend) backend="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --api-key) api_key="$2"; shift 2 ;;
    --filter) extra+=(--filter "$2"); shift 2 ;;
    --json) extra+=(--json); shift ;;
    --verbose) extra+=(--verbose); shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

case "$backend" in
  fixtures) model="${model:-fixture-scripted}" ;;
  llamacpp) model="${model:-tiny-qwen3}" ;;
  *) echo "--backend must be fixtures or llamacpp" >&2; exit 2 ;;
esac

if [[ -z "$source_dir" || ! -f "$source_dir/bin/compliance-test.ts" || ! -f "$source_dir/src/lib/compliance-tests.ts" ]]; then
  echo "--source must name a checkout of the Open Responses repository (bin/compliance-test.ts, src/lib/)" >&2
  exit 2
fi

# 1. bun + zod from the npm registry, pinned (the suite's package.json asks for zod ^3.25.76).
if [[ ! -x "$cache/node_modules/.bin/bun" || ! -d "$cache/node_modules/zod" ]]; then
  mkdir -p "$cache"
  npm install --no-audit --no-fund --no-save --prefix "$cache" bun@1.3.14 zod@3.25.76 >&2
fi
bun="$cache/node_modules/.bin/bun"
"$bun" --version >/dev/null

# 2. The suite's own files (bin/, src/lib/, src/generated/), laid out as in its repository.
suite="$cache/suite"
rm -rf "$suite"
mkdir -p "$suite/src"
cp -R "$source_dir/bin" "$suite/bin"
cp -R "$source_dir/src/lib" "$suite/src/lib"
cp -R "$source_dir/src/generated" "$suite/src/generated"
ln -s "$cache/node_modules" "$suite/node_modules"

# 3. A bridge in front of the chosen backend, unless one was given.
bridge_pid=""
llama_pid=""
stop() { if [[ -n "$1" ]]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi; }
cleanup() { stop "$bridge_pid"; stop "$llama_pid"; }
trap cleanup EXIT
if [[ -z "$base_url" ]]; then
  upstream=(--upstream fixtures)
  if [[ "$backend" == llamacpp ]]; then
    url_file="$cache/llama.url"
    rm -f "$url_file"
    (cd "$repo" && exec python3 -m tests.support.llamacpp.serve --port-file "$url_file") >"$cache/llama.log" 2>&1 &
    llama_pid=$!
    for _ in $(seq 1 600); do
      if [[ -s "$url_file" ]] || ! kill -0 "$llama_pid" 2>/dev/null; then break; fi
      sleep 0.2
    done
    if [[ ! -s "$url_file" ]]; then
      echo "llama-server did not start (see $cache/llama.log):" >&2
      tail -20 "$cache/llama.log" >&2
      exit 1
    fi
    upstream=(--upstream "$(cat "$url_file")" --profile llamacpp)
  fi
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  (cd "$repo" && exec responses-bridge serve "${upstream[@]}" --store memory --host 127.0.0.1 --port "$port" \
      --api-key "$api_key") >"$cache/bridge.log" 2>&1 &
  bridge_pid=$!
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  base_url="http://127.0.0.1:$port/v1"
fi

# 4. The suite itself.
cd "$suite"
"$bun" run bin/compliance-test.ts --base-url "$base_url" --api-key "$api_key" --model "$model" "${extra[@]}"
