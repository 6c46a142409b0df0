#!/usr/bin/env bash
# MM-MergeBench Flickr30k: generate answers with one model and score them into
# $RESULTS/$RUN_NAME/Flickr30k/. Settings: flags or the env file (see common.sh, env.example).
#   scripts/eval_merge/Flickr30k.sh --model-path MERGED --model-base BASE --data-root DATA [--run-name NAME]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_main "Flickr30k" "$(basename "$0")" "$@"
