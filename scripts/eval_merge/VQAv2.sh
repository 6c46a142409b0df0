#!/usr/bin/env bash
# MM-MergeBench VQAv2: generate answers with one model and score them into
# $RESULTS/$RUN_NAME/VQAv2/. Settings: flags or the env file (see common.sh, env.example).
#   scripts/eval_merge/VQAv2.sh --model-path MERGED --model-base BASE --data-root DATA [--run-name NAME]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_main "VQAv2" "$(basename "$0")" "$@"
