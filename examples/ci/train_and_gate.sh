#!/usr/bin/env bash
# A CI pipeline's training step, run ON the cluster: train a candidate model version with a deepext job,
# evaluate it and the production version with one suite, and gate the candidate. A CI runner starts it
# with Ray job submission, which waits and exits non-zero when this script does:
#
#   ray job submit --address http://HEAD:8265 --working-dir . -- bash examples/ci/train_and_gate.sh
#
# It fails when the training job fails (after its retries) or the gate does (a metric dropped more than
# CI_MAX_DROP, or a CI_REQUIRE rule is not met). It runs where deepext's settings are: on a node of the
# compose deployment (DEEPEXT_* in the environment) or of cluster.yaml (DEEPEXT_CONFIG). The audit log
# names the actor `cli:$DEEPEXT_USER`. github-actions.yml beside it is a workflow that submits it.
#
#   DEEPEXT_PROJECT   project (default demo)
#   CI_MODEL_NAME     name of the model version the job registers (default capitals-json)
#   CI_TRAIN_CONFIG   the GRPO job's config (default examples/ci/grpo.yaml)
#   CI_SUITE_FILE     the evaluation suite, pushed first (default examples/ci/suite.yaml)
#   CI_BASELINE       the version the candidate must not fall behind (default $CI_MODEL_NAME@production;
#                     when there is none yet, the candidate only has to meet CI_REQUIRE)
#   CI_MAX_DROP       most any metric may drop, absolute (default 0.01)
#   CI_REQUIRE        gate rules, space-separated (default "pass_rate>=0.5"; see `deepext eval gate --help`)
#   CI_PROMOTE        1: promote the candidate to production when the gate passes (default 0)
set -euo pipefail

project=${DEEPEXT_PROJECT:-demo}
model=${CI_MODEL_NAME:-capitals-json}
config=${CI_TRAIN_CONFIG:-examples/ci/grpo.yaml}
suite_file=${CI_SUITE_FILE:-examples/ci/suite.yaml}
baseline=${CI_BASELINE:-$model@production}
max_drop=${CI_MAX_DROP:-0.01}
read -r -a rules <<<"${CI_REQUIRE:-pass_rate>=0.5}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "suite: pushing $suite_file to $project"
deepext eval suites push "$suite_file" --project "$project"
suite=$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["name"])' "$suite_file")

step "train: $config as $model (queued, scheduled and registered by the platform)"
deepext jobs submit grpo --config "$config" --project "$project" --name "$model" --wait | tee "$log"
job_id=$(sed -n 's/^job \([0-9][0-9]*\) queued.*/\1/p' "$log" | head -n 1)
# The job's `succeeded` event names the version it registered: "registered model version NAME@N".
candidate=$(deepext jobs show "$job_id" --project "$project" | python -c '
import json, sys
events = json.load(sys.stdin)["events"]
reason = next(e["reason"] for e in reversed(events) if e["to_state"] == "succeeded")
print(reason.removeprefix("registered model version "))')
echo "job $job_id registered $candidate"

step "evaluate: $suite on the candidate $candidate"
deepext eval run "$suite" --model "$candidate" --project "$project"
if deepext models show "$baseline" --project "$project" >/dev/null 2>&1; then
  step "evaluate: $suite on the baseline $baseline"
  deepext eval run "$suite" --model "$baseline" --project "$project"
else
  echo "no $baseline yet: the candidate is gated on its requirements alone"
  baseline=$candidate
fi

step "gate: $candidate against $baseline"
require_args=()
for rule in "${rules[@]}"; do require_args+=(--require "$rule"); done
deepext eval gate --baseline "$baseline" --candidate "$candidate" --suite "$suite" \
  --max-drop "$max_drop" "${require_args[@]}" --project "$project"

if [ "${CI_PROMOTE:-0}" = 1 ]; then
  step "promote: $candidate to production"
  deepext models tag "$candidate" --stage production --project "$project"
fi
