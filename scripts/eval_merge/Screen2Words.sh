#!/usr/bin/env bash
# MM-MergeBench Screen2Words: generate answers with one model and score them into
# $RESULTS/$RUN_NAME/Screen2Words/. Settings: flags or the env file (see common.sh, env.example).
#   scripts/eval_merge/Screen2Words.sh --model-path MERGED --model-base BASE --data-root DATA [--run-name NAME]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_main "Screen2Words" "$(basename "$0")" "$@"
