#!/usr/bin/env bash
# MM-MergeBench VizWiz-caption: generate answers with one model and score them into
# $RESULTS/$RUN_NAME/VizWiz/. Settings: flags or the env file (see common.sh, env.example).
#   scripts/eval_merge/VizWiz.sh --model-path MERGED --model-base BASE --data-root DATA [--run-name NAME]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_main "VizWiz-caption" "$(basename "$0")" "$@"
