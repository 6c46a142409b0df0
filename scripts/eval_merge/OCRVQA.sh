#!/usr/bin/env bash
# MM-MergeBench OCRVQA: generate answers with one model and score them into
# $RESULTS/$RUN_NAME/OCRVQA/. Settings: flags or the env file (see common.sh, env.example).
#   scripts/eval_merge/OCRVQA.sh --model-path MERGED --model-base BASE --data-root DATA [--run-name NAME]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_main "OCRVQA" "$(basename "$0")" "$@"
