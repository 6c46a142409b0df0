#!/usr/bin/env bash
# MM-MergeBench AOKVQA: generate answers with one model and score them into
# $RESULTS/$RUN_NAME/AOKVQA/. Settings: flags or the env file (see common.sh, env.example).
#   scripts/eval_merge/AOKVQA.sh --model-path MERGED --model-base BASE --data-root DATA [--run-name NAME]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_main "AOKVQA" "$(basename "$0")" "$@"
